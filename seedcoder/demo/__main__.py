"""`python -m seedcoder.demo`: the whole demo (seedcoder.demo.pretrain.main runs steps 1-10)."""

import sys

from seedcoder.demo.pretrain import main

sys.exit(main())
