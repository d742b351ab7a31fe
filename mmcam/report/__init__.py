"""The interactive HTML report: one self-contained file per command's output folder."""

from mmcam.report.html import render, write_report
from mmcam.report.pictures import RecordPictures, record_pictures
from mmcam.report.views import View, caption_view, explanation_view, rl_views, target_view, vqa_view

__all__ = [
    "RecordPictures",
    "View",
    "caption_view",
    "explanation_view",
    "record_pictures",
    "render",
    "rl_views",
    "target_view",
    "vqa_view",
    "write_report",
]
