"""The names the command line offers, kept free of heavy imports so ``--help`` is fast; each is checked
against its registry (named beside it) by a test, so they cannot drift apart."""

METHODS = (  # mmcam.engine.methods.METHODS, in its order
    "gradcam",
    "counterfactual",
    "gradcam++",
    "smooth-gradcam++",
    "shapleycam",
    "xgradcam",
    "fem",
    "randomcam",
    "scorecam",
    "iscam",
    "sscam",
    "ablationcam",
    "hirescam",
    "layercam",
    "gradcam-elementwise",
    "normgrad",
    "gradnorm",
    "attention-relevance",
    "legrad",
    "eigencam",
    "eigengradcam",
    "kpcacam",
    "guided-backprop",
    "guided-gradcam",
    "fullgrad",
    "occlusion",
    "rise",
    "perturbation",
)
WORD_CHOICES = ("all", "content")  # mmcam.adapters.captioning.WORD_CHOICES
METRICS = (  # the keys of mmcam.metrics.registry.METRICS, in its order
    "localization",
    "pointing",
    "pointing-tolerant",
    "pointing-unambiguous",
    "pointing-tolerant-unambiguous",
    "hallucinated",
    "energy",
    "reliance-peak",
    "reliance-mass",
    "reliance-rank",
    "deletion",
    "insertion",
    "deletion-grid",
    "insertion-grid",
    "occlusion",
    "discrimination",
    "sanity",
    "sanity-smooth",
    "sanity-efficient",
    "drop",
    "increase",
    "sparseness",
    "complexity",
    "random-logit",
    "road",
    "road-morf",
    "road-lerf",
    "sensitivity",
    "infidelity",
    "cited-units",
    "random-units",
    "next-units",
    "concept-deletion",
)
TASKS = ("classify", "caption", "vqa", "rl")  # mmcam.evaluation.tasks.TASKS
BASELINES = ("uniform", "center")  # the keys of mmcam.metrics.baselines.BASELINES
PERTURBATIONS = ("blur", "zero", "background")  # mmcam.metrics.faithfulness.PERTURBATIONS
FILLS = ("background", "blur", "mean", "zero")  # mmcam.engine.methods.perturbation.FILLS
DROP = "drop"  # mmcam.engine.methods.perturbation.DROP
ACTION_TARGETS = ("logit", "log-prob", "advantage", "margin")  # mmcam.adapters.rl.rollouts.ACTION_TARGETS
SUITES = ("classify", "caption", "vqa", "methods", "chat")  # the keys of mmcam.bench.SUITES
SHAPES_SEED = 30_000  # mmcam.evaluation.data.SHAPES_SEED
DEFAULT_SCENES = 500  # mmcam.evaluation.runner.DEFAULT_SCENES
FUSIONS = ("maximum", "product")  # mmcam.engine.fusion.FUSIONS
