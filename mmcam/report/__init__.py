"""The interactive HTML report: one self-contained file per command's output folder."""

from mmcam.report.html import render, write_report
from mmcam.report.views import View, caption_view, explanation_view, record_view, rl_views, vqa_view

__all__ = [
    "View",
    "caption_view",
    "explanation_view",
    "record_view",
    "render",
    "rl_views",
    "vqa_view",
    "write_report",
]
