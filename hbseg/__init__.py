import os as _os

__version__ = "0.1.0"

# albumentations asks the network for its newest version when it is imported (4 s of DNS
# failure on an offline GPU machine): off for this process and every process it starts
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
