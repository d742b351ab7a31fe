"""Every metric ``mmcam eval`` offers, by name, in the order its tables list them. A new metric is one
class (a ``contract.Metric``) in its family's module and one entry here; the command line's choices and the
tables' labels follow from this registry."""

from __future__ import annotations

from mmcam.metrics.complexity import Complexity, Sparseness
from mmcam.metrics.contract import by_name
from mmcam.metrics.discrimination import Discrimination
from mmcam.metrics.faithfulness import (
    ConfidenceDrop,
    ConfidenceIncrease,
    Deletion,
    GridDeletion,
    GridInsertion,
    Infidelity,
    Insertion,
    MaxSensitivity,
    OcclusionCorrelation,
)
from mmcam.metrics.localization import LocalizationError
from mmcam.metrics.pointing import (
    EnergyPointing,
    Hallucinated,
    PeakPointing,
    TolerantPointing,
    UnambiguousPointing,
    UnambiguousTolerantPointing,
)
from mmcam.metrics.reliance import RelianceMass, ReliancePeak, RelianceRank
from mmcam.metrics.road import Road, RoadLeastFirst, RoadMostFirst
from mmcam.metrics.sanity import Cascading, EfficientMPRT, SmoothMPRT
from mmcam.metrics.similarity import RandomLogit
from mmcam.metrics.unit_ablation import CitedUnits, ConceptDeletion, NextUnits, RandomUnits

METRICS = by_name(
    LocalizationError(),
    PeakPointing(),
    TolerantPointing(),
    UnambiguousPointing(),
    UnambiguousTolerantPointing(),
    Hallucinated(),
    EnergyPointing(),
    ReliancePeak(),
    RelianceMass(),
    RelianceRank(),
    Deletion(),
    Insertion(),
    GridDeletion(),
    GridInsertion(),
    OcclusionCorrelation(),
    Discrimination(),
    Cascading(),
    SmoothMPRT(),
    EfficientMPRT(),
    ConfidenceDrop(),
    ConfidenceIncrease(),
    Sparseness(),
    Complexity(),
    RandomLogit(),
    Road(),
    RoadMostFirst(),
    RoadLeastFirst(),
    MaxSensitivity(),
    Infidelity(),
    CitedUnits(),
    RandomUnits(),
    NextUnits(),
    ConceptDeletion(),
)
