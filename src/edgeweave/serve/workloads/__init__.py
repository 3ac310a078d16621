"""Workloads generated here from real data (nothing downloaded), each with a description that
says exactly how it was made: recurring images for the semantic cache, video streams for the
input filter."""

from edgeweave.serve.workloads.recurring import RecurringWorkload, recurring_images
from edgeweave.serve.workloads.variation import Variation
from edgeweave.serve.workloads.video import BACKGROUND, Scene, VideoStream, video_stream

__all__ = [
    "BACKGROUND",
    "RecurringWorkload",
    "Scene",
    "Variation",
    "VideoStream",
    "recurring_images",
    "video_stream",
]
