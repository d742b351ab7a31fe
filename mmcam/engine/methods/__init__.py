"""CAM methods by family, one class each (``base.CamMethod``: the contract and the registry). Importing
the families in this order fills ``METHODS`` in the order the command line lists them."""

# isort: off
from mmcam.engine.methods import channel  # noqa: F401
from mmcam.engine.methods import scored  # noqa: F401
from mmcam.engine.methods import elementwise  # noqa: F401
from mmcam.engine.methods import attention  # noqa: F401
from mmcam.engine.methods import eigen  # noqa: F401
from mmcam.engine.methods import pixels  # noqa: F401
from mmcam.engine.methods import perturbation  # noqa: F401

# isort: on
from mmcam.engine.methods.base import (
    CAPABILITIES,
    METHODS,
    CamMethod,
    CamResult,
    ChannelWeightCAM,
    capable,
    get_method,
)

__all__ = ["CAPABILITIES", "METHODS", "CamMethod", "CamResult", "ChannelWeightCAM", "capable", "get_method"]
