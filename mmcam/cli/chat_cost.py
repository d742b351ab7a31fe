"""``mmcam bench --task chat --config NAME --depth N ...``: the cost of explaining every word of a chat model's
reply, against the plain forward (``mmcam.chat_cost``), printed with its ratios on lines of their own."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone

PEERS = ("pytorch-grad-cam", "captum")
# LLaVA 1.5 7B at depth 1, 30 words, one process each (docs/speed.md): 8 targets per backward 1.23x the forward's
# peak memory and 7.18x its time, 32 targets 1.62x and 7.51x
MAX_TARGETS_PER_BACKWARD = 8


def depths_of(values: list[str]) -> list[int | None]:
    """``--depth`` values: layer counts, or ``full`` (None)."""
    depths = []
    for value in values:
        if value == "full":
            depths.append(None)
        elif value.isdigit() and int(value) > 0:
            depths.append(int(value))
        else:
            raise ValueError(f"--depth takes layer counts (2 4 8) or full, not '{value}'")
    return depths


def run(
    config: str,
    depths: list[int | None],
    device: str,
    dtype: str,
    words: int,
    chunk: int,
    peer_words: int,
    many: int,
    layer: str = "default",
) -> int:
    import torch

    from mmcam.bench import missing_peers
    from mmcam.chat_cost import full_depth_estimate, many_targets, measure_depth
    from mmcam.published import ARCHITECTURES

    peers = [tool for tool in PEERS if tool not in missing_peers()] if peer_words > 0 else []
    architecture = ARCHITECTURES[config]
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    print(
        f"{config}: {architecture.image_tokens} image tokens, a {words}-token reply, Grad-CAM at "
        + ("the family's default layer" if layer == "default" else f"layer {layer}")
        + f", {dtype}, {device} ({name}, {torch.get_num_threads()} threads), random weights; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    print(
        "peak memory: "
        + ("max_memory_allocated" if device == "cuda" else "peak resident memory of a fresh process")
        + (f"; peers timed on {peer_words} words, scaled to {words}" if peers else "; the peers are not run")
    )
    measured = []
    for depth in depths:
        row = measure_depth(config, depth, device, dtype, words, chunk, peer_words, peers, layer)
        measured.append(row)
        print(
            f"depth {row.depth}: forward {row.forward.seconds:.2f} s, {row.forward.peak_mb:.0f} MB; all {words} words "
            f"in one call ({chunk} per backward) {row.explain.seconds:.2f} s, {row.explain.peak_mb:.0f} MB"
        )
        print(f"memory ratio {row.memory_ratio:.2f}x")
        print(
            f"time ratio {row.time_ratio:.2f}x (against {row.explain.forward_seconds:.2f} s, the mean of the forward "
            f"timed in its process before and after it: {' and '.join(f'{t:.2f} s' for t in row.explain.forwards)})"
        )
        for tool in row.peers:
            peer = row.peers[tool]
            print(
                f"{tool}, a call per word: {row.peer_seconds(tool):.1f} s for {words} words ({peer.seconds:.1f} s "
                f"for {peer.case.words}, {peer.in_forwards:.1f} forwards of its process)"
            )
            print(f"{tool} time ratio {row.peer_ratio(tool):.1f}x mmcam's")
        sys.stdout.flush()
    if len({row.depth for row in measured}) >= 2 and architecture.full_depth not in {
        row.depth for row in measured
    }:
        estimate = full_depth_estimate(config, measured)
        print(
            f"full depth {architecture.full_depth}, extrapolated (assumption: every layer adds the same memory and "
            f"time; a least-squares line in the depth through depths {', '.join(str(r.depth) for r in measured)}): "
            f"forward {estimate['forward_s']:.1f} s, {estimate['forward_mb']:.0f} MB; all words "
            f"{estimate['explain_s']:.1f} s, {estimate['explain_mb']:.0f} MB"
        )
        print(f"memory ratio {estimate['memory_ratio']:.2f}x")
        print(f"time ratio {estimate['time_ratio']:.2f}x")
    if many:
        depth = measured[0].depth
        few, all_ = many_targets(config, depth, device, dtype, words, many, [chunk])
        print(
            f"a {many}-token reply at depth {depth}, {chunk} targets per backward: {words} words "
            f"{few.seconds:.1f} s, {few.peak_mb:.0f} MB; all {many} words {all_.seconds:.1f} s, {all_.peak_mb:.0f} MB"
        )
        print(f"memory ratio {many} / {words} words {all_.peak_mb / few.peak_mb:.2f}x")
        print(f"time ratio {many} / {words} words {all_.seconds / few.seconds:.2f}x")
    return 0
