"""The default layer and method for transformer captioners and VQA models, chosen by measurement on the
trained fixtures (``tasks/fixtures/pointing.py``, docs/families.md, "Maps on trained
standard architectures").

Layer: the second block's pre-attention norm of the vision tower (``TOKEN_BLOCK``). Its token i is patch i
after one round of attention: through the residual it still sits on its patch, and it has gathered the
neighbouring patches that a shape is recognized from. On the five trained captioners and VQA models (200
scenes with 2-3 objects) it points 0.388 on average against 0.352 for the first block, and never collapses
(the lowest fixture 0.318 against 0.135): ViT + GPT-2 0.471 (block 0: 0.530), BLIP caption 0.502 (0.390),
GIT 0.318 (0.291), ViLT 0.326 (0.415), BLIP VQA 0.323 (0.135); blocks 2 and 3 point lower again (BLIP
caption 0.394, 0.414). Method: NormGrad, ||A_:ij|| ||G_k:ij||, how strongly the target depends on each
patch token, unsigned; Grad-CAM at blocks 0 and 1 points 0.10-0.24, and attention relevance (Chefer et
al.) points lower everywhere but on ViLT (0.396, against 0.326 here and 0.415 at block 0); it is the
default only of plain ViT classifiers, which read the class token (``adapters.classification``), and of
ViLT (``VILT_METHOD``).

Judged by the model's own evidence (docs/evaluation.md, "Defaults judged by the model's own evidence": 50
scenes, seed 41000, occlusion of each patch as the reference), NormGrad at the second block meets occlusion's
deletion AUC on every token fixture (0.89-1.05 x occlusion's) and its tolerant pointing (within 0.05) on BLIP
caption, ViT + GPT-2 and ViLT; its peak is on the object the model relies on 0.72-0.92 x as often as occlusion's. On ViLT, whose text
and image tokens share one stack, attention relevance at the same block puts the peak there 0.748 of the
time against NormGrad's 0.578 (paired difference +0.171, 95% interval [+0.076, +0.262]; occlusion 0.802)
with the same deletion AUC (0.346 / 0.349) and tolerant pointing within the interval (0.835 / 0.863); on
BLIP caption and GIT it does not (deletion AUC worse, peak agreement not better). The Hugging Face
captioners are read instead at the image's tokens as their text decoder reads them, with NormGrad
(``adapters.captioning.default_layer``: BLIP's last vision block, GIT's visual projection, ViT + GPT-2's
final encoder norm), where the peak lands on the object the model relies on more often and deletion AUC is
as low or lower.
"""

from __future__ import annotations

from torch import nn

TOKEN_METHOD = "normgrad"
VILT_METHOD = "attention-relevance"  # ViLT's maps, by reliance agreement (above)
TOKEN_BLOCK = 1
PRE_ATTENTION_NORMS = ("layernorm_before", "layer_norm1")


def block_norm(
    model: nn.Module, tower: str = "", names: tuple[str, ...] = PRE_ATTENTION_NORMS, block: int = TOKEN_BLOCK
) -> str | None:
    """The pre-attention norm (a module named one of ``names``) of transformer block ``block`` under
    ``tower`` (a module name prefix), the last block when the tower has fewer, or None if it has none."""
    norms = [
        name for name, _ in model.named_modules() if name.startswith(tower) and name.split(".")[-1] in names
    ]
    return norms[min(block, len(norms) - 1)] if norms else None
