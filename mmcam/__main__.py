import sys

from mmcam.cli import main

sys.exit(main())
