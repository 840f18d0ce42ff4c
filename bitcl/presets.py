"""Per-benchmark presets: settings chosen on validation data, applied to what the user leaves unset;
and the seed papers' protocols, one command each (``bitcl run --preset NAME``, ``PROTOCOLS``).

Each preset was chosen by a committed search that evaluates on a validation split carved
from the training data (``--validation``), never on the test split; its entry names the
script and the result file that hold the search. ``bitcl list`` prints them and every
run records the resolved values in results.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# (benchmark, method, scenario) -> settings; "*" matches any method
PRESETS: dict[tuple[str, str, str], dict] = {
    # 10 tasks x 3 epochs: the protocol the search ran at (BLIP's authors: 5 epochs of SGD)
    ("permuted-mnist", "blip", "task"): {
        "epochs": 3, "lr": 6e-3, "batch_size": 32, "method_options": {"fisher_prior": 1e-7},
        "source": "benchmarks/search_presets.py permuted-blip -> benchmarks/results/search_permuted_blip.json"},
}


def resolve_preset(benchmark: str, method: str, scenario: str) -> dict:
    """The preset for this run, or {} (``source`` describes where it came from)."""
    return dict(PRESETS.get((benchmark, method, scenario)) or PRESETS.get((benchmark, "*", scenario)) or {})


def describe_presets() -> list[str]:
    lines = []
    for (benchmark, method, scenario), values in sorted(PRESETS.items()):
        shown = {k: v for k, v in values.items() if k != "source"}
        lines.append(f"{benchmark} / {method} / {scenario}: {shown} (chosen by {values.get('source', '?')})")
    return lines


# -- paper protocols: `bitcl run --preset NAME` -------------------------------------------------------------

@dataclass(frozen=True)
class Protocol:
    """A seed paper's experiment as one command: its task split, network, optimiser and epochs as
    far as bitcl can express them, with what differs said plainly.

    ``settings`` are RunConfig fields (``method_options`` included); flags typed on the command
    line override them. ``paper_figures`` quotes the paper's own numbers (labelled as the
    paper's, with the table) only where they were checked against the paper's text; otherwise
    it is None and ``paper_figures_note`` says why. ``time_estimate`` is an estimate, with how
    it was made.
    """

    name: str
    paper: str
    description: str
    settings: dict
    sources: str
    differences: tuple[str, ...]
    time_estimate: dict
    paper_figures: Optional[dict] = None
    paper_figures_note: str = "not quoted: could not be checked offline"
    refusal: Optional[str] = None   # set when bitcl cannot run the protocol at all

    def describe(self) -> str:
        shown = {k: v for k, v in self.settings.items() if k != "method_options"}
        opts = self.settings.get("method_options") or {}
        text = f"{self.name}: {self.description} [{self.paper}] settings {shown}"
        text += f" options {opts}" if opts else ""
        cpu, gpu = self.time_estimate.get("cpu_hours"), self.time_estimate.get("gpu_hours")
        if cpu:
            text += f"; about {cpu:g} h on one CPU core (estimate from timed short runs)"
        if gpu:
            text += f", {gpu:g} h on an {self.time_estimate['gpu_name']} (estimate from FLOPs, not measured)"
        text += "; the paper's numbers: " + ("quoted in docs/benchmarks.md" if self.paper_figures else "not quoted")
        return text + (f" (NOT RUNNABLE: {self.refusal})" if self.refusal else "")


_BLIP = "Shi et al., Continual Learning via Bit-Level Information Preserving, CVPR 2021, arXiv 2105.04444"
_BLIP_CODE = ("checked against the authors' code (github.com/Yujun-Shi/BLIP, ImageClassification/src: the README's "
              "commands, run_blip.py's defaults, dataloaders/, networks/, approaches/blip.py); the paper's own text "
              "could not be read offline")
_BLIP_SCHEDULE = ("BLIP's code trains up to 200 epochs per task but divides the learning rate by 3 after 5 epochs "
                  "without a better validation loss, stops below 1e-4 and keeps the best-validation weights; bitcl "
                  "trains all 200 epochs at a constant rate (use --validation and fewer --epochs to approximate)")
_BLIP_NORM = "BLIP normalises inputs by per-dataset mean/std; bitcl feeds pixels in [0, 1]"
_BLIP_FIGURES = ("not quoted: could not be checked offline (only the paper's abstract pages were readable; the "
                 "authors' README refers to the paper for its numbers)")
_BENZING = ("Benzing, Unifying Importance Based Regularisation Methods for Continual Learning, AISTATS 2022, "
            "arXiv 2006.06357")
_BENZING_CODE = ("checked against the author's code (github.com/freedbee/continual_regularisation, for the paper's "
                 "earlier title 'Understanding Regularisation Methods for Continual Learning': {files}); the paper's "
                 "own text could not be read offline")
_BENZING_FIGURES = ("not quoted: could not be checked offline (only the paper's abstract pages were readable; the "
                    "author's code holds no results table)")
_BENZING_MNIST_DATA = ("the code reads TensorFlow's tutorial MNIST (55,000 training images) and draws 234 random "
                       "batches of 256 per epoch; bitcl passes once over the 60,000 training images")
_ANPYC = ("Peng et al., Overcoming Long-term Catastrophic Forgetting through Adversarial Neural Pruning and Synaptic "
          "Consolidation, IEEE TNNLS, arXiv 1912.09091")
_ANPYC_CODE = ("network, optimiser, batch, epochs, pruning and lambda checked against the authors' code "
               "(github.com/GeoX-Lab/ANPyC, Permuted_MNIST/ANPyC_wi_NP.py); the code runs 10 tasks: 20 and 50 tasks "
               "follow the paper's long-sequence experiments as its abstract describes them, not checked against its "
               "text")
_ANPYC_FIGURES = ("not quoted: could not be checked offline (only the paper's abstract pages were readable; the "
                  "authors' README gives no numbers)")
_DLCFT = ("Shon et al., DLCFT: Deep Linear Continual Fine-Tuning for General Incremental Learning, ECCV 2022, "
          "arXiv 2208.08112")
_CPU_HOW = ("estimate, not a measurement of the whole run: CPU seconds per training sample of one epoch (and of "
            "the rest: consolidation, evaluation) on one thread of an AMD EPYC, measured on 256 random images with "
            "benchmarks/protocol_time.py, times the protocol's samples, epochs and tasks; one free core's time; "
            "rough: two timings of the same network differed by up to 2x")
_GPU_NAME = "NVIDIA H100 SXM"
_GPU_HOW = ("estimate from FLOPs, not measured (no GPU was available): benchmarks/protocol_time.py --what gpu counts "
            "the FLOPs and kernel-launching operations of a training step of the protocol's network and method; each "
            "step is priced at the longer of its FLOPs at an assumed sustained 30 TFLOP/s (FP32) and its operations "
            "at an assumed 10 us each, times the protocol's steps. Python overhead of the training loop is not "
            "counted, so this is nearer a lower bound than a forecast: a real run is likely slower; measure with "
            "protocol_time.py --device cuda")


def _time(cpu_hours: Optional[float], gpu_hours: Optional[float] = None) -> dict:
    """benchmarks/protocol_time.py's estimates for the whole protocol: ``cpu_hours`` on one core (timed short
    runs), ``gpu_hours`` on ``gpu_name`` (counted FLOPs and operations, see ``gpu_how``)."""
    return {"cpu_hours": cpu_hours, "cpu_how": _CPU_HOW, "gpu_hours": gpu_hours, "gpu_name": _GPU_NAME,
            "gpu_how": _GPU_HOW}


def _blip_mlp(benchmark: str) -> dict:
    return {"benchmark": benchmark, "data": "mnist", "scenario": "task", "method": "blip", "arch": "mlp",
            "hidden": [1200], "backbone": "quant", "bits": 20, "optimizer": "sgd", "momentum": 0.0, "lr": 0.01,
            "lr_schedule": "none", "batch_size": 64, "epochs": 200, "method_options": {"fisher_prior": 1e-15}}


def _blip_alexnet(benchmark: str, width: int, fisher_prior: float) -> dict:
    """The settings BLIP's two AlexNet presets share; they differ in benchmark, width and prior."""
    return {"benchmark": benchmark, "scenario": "task", "method": "blip", "arch": "alexnet", "width": width,
            "dropout": 0.2, "backbone": "quant", "bits": 20, "optimizer": "sgd", "momentum": 0.0, "lr": 0.05,
            "lr_schedule": "none", "batch_size": 32, "epochs": 200, "method_options": {"fisher_prior": fisher_prior}}


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("blip-mnist5", _BLIP, "BLIP's MNIST-5: full MNIST in 5 tasks of 2 digits, a head per task, MLP 784-1200",
             _blip_mlp("split-mnist"), _BLIP_CODE, (_BLIP_SCHEDULE, _BLIP_NORM), _time(0.25, 0.016),
             paper_figures_note=_BLIP_FIGURES),
    Protocol("blip-pmnist", _BLIP,
             "BLIP's PMNIST: full MNIST under 10 pixel permutations, a head per task, MLP 784-1200",
             {**_blip_mlp("permuted-mnist"), "tasks": 10}, _BLIP_CODE,
             (_BLIP_SCHEDULE, _BLIP_NORM, "BLIP's code permutes every task and shuffles their order by the seed; "
              "bitcl leaves task 0 unpermuted"), _time(3.2, 0.16), paper_figures_note=_BLIP_FIGURES),
    Protocol("blip-alternating-cifar", _BLIP,
             "BLIP's alternating CIFAR-10/100: 5 CIFAR-10 tasks of 2 classes and 5 CIFAR-100 tasks of 20, task order "
             "shuffled by the seed as in the code, AlexNet at twice the width (--mul 2)",
             _blip_alexnet("alternating-cifar", width=128, fisher_prior=5e-16),
             _BLIP_CODE,
             (_BLIP_SCHEDULE, _BLIP_NORM, "BLIP's code holds out 10% of each task's training data for that schedule; "
              "bitcl trains on all of it",
              "bitcl's AlexNet has batch norm (--bn first-task); BLIP's quantised AlexNet has none"), _time(60, 0.17),
             paper_figures_note=_BLIP_FIGURES),
    Protocol("blip-dataset-sequence", _BLIP,
             "BLIP's sequence of datasets without notMNIST (not fetchable): CIFAR-10, MNIST, SVHN, Fashion-MNIST at "
             "3x32x32, order shuffled by the seed as in the code, AlexNet at 0.8 width (--mul 0.8)",
             _blip_alexnet("dataset-sequence", width=51, fisher_prior=5e-17),
             _BLIP_CODE,
             ("4 tasks, not 5: notMNIST cannot be fetched (no official checksum); the code's task order is kept for "
              "the other four", _BLIP_SCHEDULE, _BLIP_NORM,
              "BLIP's code holds out 15% of each task's training data for that schedule; bitcl trains on all of it",
              "bitcl's AlexNet has batch norm (--bn first-task); BLIP's quantised AlexNet has none",
              "the code's fully connected layers stay 2048 wide for --mul < 1; bitcl's --width scales every layer"),
             _time(37, 0.42), paper_figures_note=_BLIP_FIGURES),
    Protocol("benzing-permuted-mnist", _BENZING,
             "Benzing's Permuted-MNIST: 10 tasks, one shared head, MLP 784-2000-2000 (float), Adam; --method si by "
             "default, any regulariser (ewc, mas, siu, sib, ...) with --method",
             {"benchmark": "permuted-mnist", "data": "mnist", "tasks": 10, "scenario": "domain", "method": "si",
              "arch": "mlp", "hidden": [2000, 2000], "backbone": "float", "optimizer": "adam", "lr": 1e-3,
              "lr_schedule": "none", "batch_size": 256, "epochs": 20},
             _BENZING_CODE.format(files="MNIST/worker_SI.py and worker_MAS.py: 10 tasks, 784-2000-2000-10 with one "
                                        "shared head, Adam at TensorFlow's default rate 1e-3 and reset at each task, "
                                        "batch 256, 20 epochs per task"),
             ("the code permutes every task, task 0 included; bitcl leaves task 0 unpermuted", _BENZING_MNIST_DATA,
              "the code initialises weights Glorot-uniform and biases at 0.1; bitcl uses PyTorch's defaults"),
             _time(1.5, 0.015), paper_figures_note=_BENZING_FIGURES),
    Protocol("benzing-split-cifar", _BENZING,
             "Benzing's Split CIFAR-10/100: CIFAR-10, then CIFAR-100 classes 0-49 in 5 tasks of 10, a head per task, "
             "Adam; --method si by default",
             {"benchmark": "split-cifar10-100", "scenario": "task", "method": "si", "arch": "conv", "backbone": "float",
              "optimizer": "adam", "lr": 1e-3, "lr_schedule": "none", "batch_size": 256, "epochs": 60,
              "method_options": {"xi": 1e-3}},
             _BENZING_CODE.format(files="CIFAR/worker_SI.py, worker_MAS.py and utils.py: 6 tasks (all of CIFAR-10, "
                                        "then CIFAR-100 classes in consecutive groups of 10), a 10-way head per task, "
                                        "Adam at 1e-3 reset at each task, 60 epochs per task; the batch size is the "
                                        "searcher's argument, 256 in the code's result logs; SI's damping xi 0.001, "
                                        "the code's CIFAR value (its MNIST value, 0.1, is bitcl's default)"),
             ("the code's network (conv 3x3 32-32, max-pool, dropout 0.25, conv 64-64, max-pool, dropout 0.25, a "
              "512-unit layer with dropout 0.5) is not a bitcl backbone; this uses the closest, `conv` (two 3x3 conv "
              "blocks 32, 64 and a 256-unit layer, no dropout)",
              "the code trains on 90% of each task's training data and holds out 10% for validation; bitcl trains "
              "on all of it (add --validation 0.1 to match)",
              "xi applies to --method si; another --method runs with its own default options"),
             _time(1.1, 0.0066), paper_figures_note=_BENZING_FIGURES),
    Protocol("anpyc-permuted-mnist-20", _ANPYC,
             "ANPyC's Permuted-MNIST, 20 tasks, a head per task, MLP 784-64-32 (float), SGD lr 0.02, 30 epochs, "
             "pruning with 30 retraining epochs per step, lambda 3",
             {"benchmark": "permuted-mnist", "data": "mnist", "tasks": 20, "scenario": "task", "method": "anpyc",
              "arch": "mlp", "hidden": [64, 32], "backbone": "float", "optimizer": "sgd", "lr": 0.02,
              "lr_schedule": "none", "batch_size": 256, "epochs": 30,
              "method_options": {"lam": 3.0, "prune_first": 50.0, "prune_decay": 0.8, "prune_step": 10.0,
                                 "retrain_epochs": 30}},
             _ANPYC_CODE,
             ("the code's hidden layers have dropout 0.5; bitcl's MLP has no dropout",
              "the code decays the learning rate by 0.99 every 5 epochs (6% over a task); bitcl keeps it constant",
              "the code permutes task 0 too; bitcl leaves it unpermuted",
              "the code reads TensorFlow's tutorial MNIST (55,000 training images); bitcl uses the 60,000",
              "lambda 3 is the code's value for its importance scale; bitcl's default (10000) was chosen on "
              "Split-MNIST for its own scale: check the scales agree before comparing numbers"), _time(0.19, 0.044),
             paper_figures_note=_ANPYC_FIGURES),
    Protocol("anpyc-permuted-mnist-50", _ANPYC, "as anpyc-permuted-mnist-20 with 50 tasks",
             {"benchmark": "permuted-mnist", "data": "mnist", "tasks": 50, "scenario": "task", "method": "anpyc",
              "arch": "mlp", "hidden": [64, 32], "backbone": "float", "optimizer": "sgd", "lr": 0.02,
              "lr_schedule": "none", "batch_size": 256, "epochs": 30,
              "method_options": {"lam": 3.0, "prune_first": 50.0, "prune_decay": 0.8, "prune_step": 10.0,
                                 "retrain_epochs": 30}},
             _ANPYC_CODE, ("as anpyc-permuted-mnist-20",), _time(0.34, 0.092), paper_figures_note=_ANPYC_FIGURES),
    Protocol("dlcft-class-split-cifar100", _DLCFT,
             "DLCFT's class-incremental Split CIFAR-100 from an ImageNet-pretrained ResNet-18 (torchvision's weights, "
             "fetched and checked by their SHA-256 prefix on first use: `bitcl data get resnet18-imagenet`)",
             {"benchmark": "split-cifar100", "scenario": "class", "method": "dlcft", "arch": "resnet18-imagenet",
              "backbone": "float", "pretrained": "resnet18-imagenet", "bn": "first-task"},
             "checked against the paper's abstract only (arXiv 2208.08112; its tables and Sec. 4 could not be read "
             "offline): class-incremental learning, a pre-trained ResNet-18, the network linearised around its "
             "pre-trained weights; the split into 10 tasks of 10 classes is bitcl's split-cifar100 default",
             ("the network is torchvision's ResNet-18 with its ImageNet stem (7x7 stride-2 convolution and max-pool) "
              "fed 32x32 CIFAR images as they are; whether the paper resizes the images or adapts the stem could not "
              "be checked offline",
              "bitcl feeds pixels in [0, 1]; torchvision's weights were trained on inputs normalised by ImageNet's "
              "mean and standard deviation",
              "optimiser, learning rate, epochs and batch size are bitcl's defaults, not checked against the paper",
              "batch norms: --bn first-task, the pre-trained statistics kept (DLCFT runs them in eval mode inside the "
              "linearised network); the protocol as it was before --bn auto became the default"),
             {**_time(0.17, 0.0031),
              "cpu_how": _CPU_HOW + "; the network timed from its random initialisation without the warm-up (fetched "
                                    "weights change the values, not the time)"}),
]}


def protocol_settings(name: str) -> dict:
    """The RunConfig settings of paper protocol ``name`` (ConfigError for an unknown or unrunnable one)."""
    from bitcl.errors import ConfigError
    if name not in PROTOCOLS:
        raise ConfigError(f"--preset {name!r}: unknown; choose from {', '.join(PROTOCOLS)} (or --preset / --no-preset "
                          "for the tuned defaults)")
    protocol = PROTOCOLS[name]
    if protocol.refusal:
        raise ConfigError(f"--preset {name}: cannot run: {protocol.refusal}")
    settings = {**protocol.settings, "preset": False}  # the paper's values, not the tuned defaults
    settings["method_options"] = dict(settings.get("method_options", {}))
    settings["hidden"] = list(settings.get("hidden", [1200]))
    return settings


def split_protocol(argv: list[str]) -> tuple[list[str], Optional[str]]:
    """``argv`` without ``--preset NAME`` / ``--preset=NAME``, and NAME (None if absent).
    A bare ``--preset`` (the boolean flag) stays in ``argv``."""
    out, name, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        elif arg == "--preset" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            name = argv[i + 1]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out, name


def describe_protocols() -> list[str]:
    return [p.describe() for p in PROTOCOLS.values()]
