"""What a training task gives the generic loop (`loop.run`).

The loop owns everything that does not depend on the model: the run folder, checkpoints and
resume, the learning-rate schedule, signals and ``--time-limit``, data-parallel processes
(``--procs``), the device and bf16 autocast, logs and the validation schedule. A task owns the
model and its data:

* ``name``: what the run trains (recorded in the checkpoint).
* ``prepare(cfg) -> init``: called on a new run before the model is built; may read a
  starting point (e.g. shipped weights) and fix ``cfg["arch"]``. Returns an opaque object
  passed to ``apply_init`` (None: train from scratch).
* ``build_model(arch) -> nn.Module`` and ``architecture(model) -> dict`` (what resumes and
  exports need to rebuild it).
* ``optimizers(model, cfg) -> (opt, aux_opt)``; param groups may carry ``lr_mult``.
* ``apply_init(model, init, cfg) -> (step, seconds)``: load the starting point.
* ``data(cfg, device)``: an object with ``sample_batch(np_rng, n)`` -> one batch (an array,
  a tensor, or a tuple of them); called once the config is final, so the task may read its
  own settings from ``cfg`` here.
* ``loss(model, batch, amp_dtype) -> {"loss": tensor, "bpp": float, "mse": float}``.
* ``samples_px(cfg)``: pixels per sample (for the pixels/s in the log).
* ``validate(model) -> list | None`` (rows written to val.jsonl) and ``describe(rows)``.
* ``overridable``: extra config keys a relaunch may change.
"""

from __future__ import annotations


class Task:
    name = "task"
    overridable: tuple = ()

    def prepare(self, cfg: dict):
        return None

    def build_model(self, arch: dict | None):
        raise NotImplementedError

    def architecture(self, model) -> dict:
        return model.architecture()

    def optimizers(self, model, cfg: dict):
        import torch

        net = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
        aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
        return (torch.optim.Adam([{"params": net, "lr_mult": 1.0}], lr=cfg["lr"]),
                torch.optim.Adam(aux, lr=1e-3))

    def apply_init(self, model, init, cfg: dict) -> tuple:
        return 0, 0.0

    def data(self, cfg: dict, device):
        raise NotImplementedError

    def loss(self, model, batch, amp_dtype) -> dict:
        raise NotImplementedError

    def samples_px(self, cfg: dict) -> int:
        return int(cfg.get("crop", 0)) ** 2

    def validate(self, model) -> list | None:
        return None

    def describe(self, rows: list) -> str:
        return str(rows)


class NoAuxOptimizer:
    """The auxiliary optimizer of a model without auxiliary parameters (no entropy
    bottleneck): does nothing, saves nothing."""

    param_groups: list = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
