"""Checks shared by the chat families whose prompts hold one image token that mmcam expands itself
(Qwen2-VL, LLaVA-NeXT, LLaVA-OneVision)."""

import torch

from mmcam.adapters.captioning import explain_caption
from mmcam.adapters.chat_family import chat_template_prompt


def processor_log_probs(
    model_dir, image, prompt: str, reply: str, model_inputs: tuple[str, ...], **options
) -> list[float]:
    """The reply's token log-probabilities from the model run on its processor's own inputs (the image
    processed and its token expanded by the processor), the reply's ids appended to the prompt's; the
    processor's ``model_inputs`` are passed, the token types (1: image) made for the longer sequence;
    ``options`` go to the processor."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    inputs = dict(
        processor(
            images=[image], text=[chat_template_prompt(processor, prompt)], return_tensors="pt", **options
        )
    )
    reply_ids = processor.tokenizer(reply, add_special_tokens=False)["input_ids"]
    start = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([reply_ids])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == model.config.image_token_id).long()
    with torch.no_grad():
        log_probs = model(**{key: inputs[key] for key in model_inputs}).logits.log_softmax(-1)[0]
    return [float(log_probs[start + i - 1, token]) for i, token in enumerate(reply_ids)]


def assert_batch_matches_alone(pairs) -> None:
    """For each (results of a batch, calls explaining each image alone): the same labels, scores and maps;
    an image a random model replies nothing to (a ValueError) is skipped."""
    for together, alone_calls in pairs:
        for got, explain_alone in zip(together, alone_calls):
            if isinstance(got, ValueError):
                continue
            alone = explain_alone()
            assert got.explanation.labels == alone.explanation.labels
            torch.testing.assert_close(got.explanation.scores, alone.explanation.scores, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got.explanation.raw, alone.explanation.raw, rtol=1e-3, atol=1e-5)


def caption_maps_while(captioner, picture, module: str, hook, layer: str, **options):
    """The NormGrad explanation of the caption "a red circle" at ``layer`` while the forward hook ``hook``
    runs on ``module`` (one that plants evidence: it passes one image token on and zeroes the others)."""
    handle = captioner.model.get_submodule(module).register_forward_hook(hook)
    try:
        explainer = captioner.explainer(layer=layer, method="normgrad", **options)
        return explain_caption(captioner, picture, caption="a red circle", explainer=explainer).explanation
    finally:
        handle.remove()


def assert_contrast_is_the_difference_of_two_replies(vqa, picture) -> None:
    """ "Red rather than blue": the two replies are rows of one batch, copies of the image and question, so
    the contrast is differentiated at their shared activation: with Grad-CAM's map before its ReLU (linear
    in the gradient) it equals the map of the predicted reply minus that of "blue", and "not blue" is minus
    "blue"'s. After the reply's generation, the explainer runs one forward per answer and one for the
    contrast's pair."""
    from mmcam.adapters.vqa import explain_answers
    from tests.model_state import counted_forwards

    explainer = vqa.explainer(method="gradcam", signed=True)
    question = "what color is the circle?"
    result, forwards = counted_forwards(
        vqa.model,
        lambda: explain_answers(
            vqa, picture, question, answers=["red"], why_not=["blue"], explainer=explainer
        ),
    )
    raw = result.explanation.raw[0]  # predicted, red, not blue, predicted rather than blue
    blue = explain_answers(vqa, picture, question, answers=["blue"], explainer=explainer).explanation.raw[
        0, -1
    ]
    torch.testing.assert_close(raw[2], -blue, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(raw[3], raw[0] - blue, atol=1e-5, rtol=1e-4)
    assert raw[3].abs().max() > 0
    _, generating = counted_forwards(vqa.model, lambda: vqa.generate(vqa.prepare([picture], [question])))
    assert forwards == generating + 3  # the predicted reply, "red", and the pair of the contrast
