"""Model-agnostic meta-learning (MAML) of a small MLP over spatial blocks.

Each block of the study area is a task. Meta-training learns an initialisation
of a ``d -> 32 -> 32 -> 16 -> 2`` ReLU MLP from which a few gradient steps on a
handful of samples of one block (the *support* set) give a good model of that
block (scored on its *query* set). Written with :mod:`torch.func`:
``functional_call`` runs the MLP with explicit parameters, ``grad`` takes the
inner gradients (second order: the outer gradient differentiates through
them) and ``vmap`` runs all the tasks of a meta-batch at once.
:func:`meta_loss_loop` computes the same quantity with a Python loop over the
tasks and :func:`torch.autograd.grad`; it is kept for the speed comparison and
as a check (the tests compare both).

Label convention: class 1 = landslide, and the probability of landslide is
``softmax(logits)[:, 1]``. Inputs are expected already normalised (see
:class:`slidewise.engine.geo.samples.FeatureEncoder`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from slidewise.engine.core.errors import InputError

Params = dict[str, Tensor]


def task_samples(support: int, query: int, min_query: int) -> int:
    """Samples a block needs to be a meta-learning task.

    Args:
        support: Support samples per task.
        query: Query samples per task, at most.
        min_query: Query samples a block needs beyond its support.

    Returns:
        ``support`` plus ``min_query`` (or ``query`` when it is smaller).
    """
    return support + min(min_query, query)


@dataclass
class MetaConfig:
    """Hyper-parameters of meta-learning and few-shot adaptation.

    Attributes:
        hidden: Hidden layer widths of the MLP.
        inner_steps: Gradient steps of the inner (adaptation) loop.
        inner_lr: Inner-loop learning rate (the same at meta-training and adaptation).
        learn_inner_lr: Learn one inner learning rate per parameter tensor.
        meta_lr: Adam learning rate of the outer loop.
        iterations: Meta-iterations (outer steps).
        tasks_per_batch: Tasks (blocks) per meta-batch.
        support: Support samples per task.
        query: Query samples per task, at most (a task block with fewer samples is
            scored on every sample beyond its support).
        min_query: Query samples a block needs beyond its support to be a task.
        second_order: Differentiate through the inner gradients (else first-order MAML).
        weight_by_samples: Weight task losses by the sample count of their block.
        pretrain_epochs: Epochs of denoising-autoencoder pretraining (0 = none).
        pretrain_noise: Standard deviation of the DAE's Gaussian input noise.
        weight_decay: Outer-loop weight decay.
    """

    hidden: tuple[int, ...] = (32, 32, 16)
    inner_steps: int = 10
    inner_lr: float = 0.1
    learn_inner_lr: bool = False
    meta_lr: float = 1e-3
    iterations: int = 2000
    tasks_per_batch: int = 16
    support: int = 6
    query: int = 32
    min_query: int = 6
    second_order: bool = True
    weight_by_samples: bool = True
    pretrain_epochs: int = 0
    pretrain_noise: float = 0.3
    weight_decay: float = 0.0

    @property
    def task_samples(self) -> int:
        """Samples a block needs to be a meta-learning task."""
        return task_samples(self.support, self.query, self.min_query)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (stored in the model file)."""
        doc = asdict(self)
        doc["hidden"] = list(self.hidden)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> MetaConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        if "hidden" in known:
            known["hidden"] = tuple(int(h) for h in known["hidden"])
        return cls(**known)


class SusceptibilityMLP(nn.Module):
    """ReLU MLP ``d -> hidden... -> 2`` giving landslide / not-landslide logits.

    Args:
        n_features: Input features.
        hidden: Hidden layer widths.
    """

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (32, 32, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (n, 2); class 1 = landslide."""
        return self.net(x)


@dataclass
class TaskBatch:
    """A meta-batch of tasks, queries padded to one size.

    Attributes:
        xs: Support features (T, K, d).
        ys: Support labels (T, K) int64.
        xq: Query features (T, Q, d).
        yq: Query labels (T, Q).
        wq: Query sample weights (T, Q): 1 for samples, 0 for padding.
        weight: Task weights (T), summing to 1.
    """

    xs: Tensor
    ys: Tensor
    xq: Tensor
    yq: Tensor
    wq: Tensor
    weight: Tensor


@dataclass
class MetaState:
    """Meta-learned initialisation and inner learning rates."""

    params: Params
    inner_lrs: Params
    history: list[float] = field(default_factory=list)


def init_params(model: nn.Module) -> Params:
    """Detached copies of a module's parameters, as a name -> tensor dict."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def task_loss(
    model: nn.Module, params: Params, x: Tensor, y: Tensor, w: Tensor | None = None
) -> Tensor:
    """Mean cross-entropy of ``model`` run with ``params`` on one task.

    Args:
        w: Optional sample weights (0 marks padding); ``None`` = plain mean.
    """
    logits = functional_call(model, params, (x,))
    if w is None:
        return F.cross_entropy(logits, y)
    ce = F.cross_entropy(logits, y, reduction="none")
    return (ce * w).sum() / w.sum().clamp_min(1e-12)


def adapt(
    model: nn.Module,
    params: Params,
    inner_lrs: Params,
    x: Tensor,
    y: Tensor,
    w: Tensor | None,
    steps: int,
    second_order: bool = True,
) -> Params:
    """Inner loop with :func:`torch.func.grad` (works under ``vmap`` and ``grad``).

    Args:
        model: The MLP (only its structure is used).
        params: Starting parameters.
        inner_lrs: Learning rate per parameter name (scalar tensors).
        x: Support features (K, d).
        y: Support labels (K,).
        w: Support sample weights (K,): 1 for samples, 0 for padding; or ``None``.
        steps: Gradient steps.
        second_order: Keep the inner gradients differentiable.

    Returns:
        Adapted parameters.
    """
    inner_grad = grad(lambda p: task_loss(model, p, x, y, w))
    for _ in range(steps):
        g = inner_grad(params)
        if not second_order:
            g = {k: v.detach() for k, v in g.items()}
        params = {k: params[k] - inner_lrs[k] * g[k] for k in params}
    return params


def adapt_autograd(
    model: nn.Module,
    params: Params,
    inner_lrs: Params,
    x: Tensor,
    y: Tensor,
    w: Tensor | None,
    steps: int,
    create_graph: bool = True,
) -> Params:
    """The same inner loop with :func:`torch.autograd.grad` (one task, no vmap)."""
    for _ in range(steps):
        loss = task_loss(model, params, x, y, w)
        names = list(params)
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
        params = {k: params[k] - inner_lrs[k] * g for k, g in zip(names, grads, strict=False)}
    return params


def meta_loss_vmap(
    model: nn.Module,
    params: Params,
    inner_lrs: Params,
    batch: TaskBatch,
    steps: int,
    second_order: bool = True,
) -> Tensor:
    """Weighted query loss after adaptation, all tasks at once with ``vmap``."""

    def one_task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, wq: Tensor) -> Tensor:
        adapted = adapt(model, params, inner_lrs, xs, ys, None, steps, second_order)
        return task_loss(model, adapted, xq, yq, wq)

    losses = vmap(one_task)(batch.xs, batch.ys, batch.xq, batch.yq, batch.wq)
    return (losses * batch.weight).sum()


def meta_loss_loop(
    model: nn.Module,
    params: Params,
    inner_lrs: Params,
    batch: TaskBatch,
    steps: int,
    second_order: bool = True,
) -> Tensor:
    """The same quantity as :func:`meta_loss_vmap` with a Python loop over tasks."""
    total = torch.zeros((), dtype=batch.xs.dtype)
    for t in range(batch.xs.shape[0]):
        adapted = adapt_autograd(
            model, params, inner_lrs, batch.xs[t], batch.ys[t], None, steps, second_order
        )
        query_loss = task_loss(model, adapted, batch.xq[t], batch.yq[t], batch.wq[t])
        total = total + batch.weight[t] * query_loss
    return total


def meta_gradients(
    model: nn.Module,
    params: Params,
    inner_lrs: Params,
    batch: TaskBatch,
    steps: int,
    second_order: bool = True,
    impl: str = "vmap",
) -> tuple[Params, Params, float]:
    """Meta-gradients w.r.t. the initialisation and the inner learning rates.

    Args:
        params: Initialisation (name -> tensor).
        inner_lrs: Inner learning rate per parameter name.
        batch: The tasks.
        steps: Inner steps.
        second_order: Differentiate through the inner gradients.
        impl: ``vmap`` (torch.func, all tasks at once) or ``loop`` (one task at a time).

    Returns:
        ``(grads of params, grads of inner_lrs, loss)``.
    """
    losses = {"vmap": meta_loss_vmap, "loop": meta_loss_loop}
    if impl not in losses:
        raise ValueError(f"unknown impl {impl!r}")
    # The outer gradient uses ordinary autograd through the functional inner loop:
    # the same result as torch.func.grad over it, with one transform level less.
    p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    lrs = {k: v.detach().requires_grad_(True) for k, v in inner_lrs.items()}
    loss = losses[impl](model, p, lrs, batch, steps, second_order)
    names, lr_names = list(p), list(lrs)
    grads = torch.autograd.grad(loss, [p[k] for k in names] + [lrs[k] for k in lr_names])
    gp = dict(zip(names, grads[: len(names)], strict=False))
    glr = dict(zip(lr_names, grads[len(names) :], strict=False))
    return gp, glr, float(loss.detach())


class TaskSampler:
    """Draws meta-batches of tasks from blocks with enough samples.

    A block is a task when it holds at least ``support + min_query`` samples. Each
    task adapts on ``support`` samples of its block and is scored on up to ``query``
    others; a smaller block is scored on every sample beyond its support (the rest
    of the query is zero-weight padding).

    Args:
        x: Normalised features (n, d).
        y: Labels (n,) 0/1.
        blocks: Block ID per sample (n,).
        support: Support samples per task.
        query: Query samples per task, at most.
        seed: Random seed.
        min_query: Query samples a block needs beyond its support to be a task.

    Raises:
        InputError: no block has ``support + min_query`` samples.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        blocks: np.ndarray,
        support: int,
        query: int,
        seed: int = 0,
        min_query: int = 6,
    ) -> None:
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        self.support, self.query = int(support), int(query)
        ids, counts = np.unique(blocks, return_counts=True)
        need = task_samples(self.support, self.query, int(min_query))
        eligible = ids[counts >= need]
        if eligible.size == 0:
            raise InputError(
                f"No block has the {need} samples a meta-learning task needs "
                f"(largest block: {int(counts.max()) if counts.size else 0} samples): use fewer, "
                "larger blocks, more samples, or smaller SUPPORT/QUERY sizes."
            )
        self.block_ids = eligible
        members = [np.flatnonzero(blocks == b) for b in eligible]
        self.counts = np.array([m.size for m in members])
        width = max(int(self.counts.max()), self.support + self.query)
        self.index = np.zeros((eligible.size, width), dtype=np.int64)
        for i, m in enumerate(members):
            self.index[i, : m.size] = m
        self.rng = np.random.default_rng(seed)

    def sample(self, n_tasks: int, weight_by_samples: bool = True) -> TaskBatch:
        """Draw ``n_tasks`` tasks (blocks without replacement when possible)."""
        nb = self.block_ids.size
        chosen = self.rng.choice(nb, size=n_tasks, replace=n_tasks > nb)
        width = self.index.shape[1]
        counts = self.counts[chosen]
        keys = self.rng.random((n_tasks, width))
        keys[np.arange(width)[None, :] >= counts[:, None]] = np.inf
        order = np.argsort(keys, axis=1)[:, : self.support + self.query]
        rows = np.take_along_axis(self.index[chosen], order, axis=1)
        idx = torch.as_tensor(rows)
        k = self.support
        filled = np.arange(k, k + self.query)[None, :] < counts[:, None]
        w = counts.astype(np.float64) if weight_by_samples else np.ones(n_tasks)
        return TaskBatch(
            xs=self.x[idx[:, :k]],
            ys=self.y[idx[:, :k]],
            xq=self.x[idx[:, k:]],
            yq=self.y[idx[:, k:]],
            wq=torch.as_tensor(filled, dtype=torch.float32),
            weight=torch.as_tensor(w / w.sum(), dtype=torch.float32),
        )


def pretrain_dae(
    model: SusceptibilityMLP,
    x: np.ndarray,
    epochs: int,
    noise: float = 0.3,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    max_samples: int = 200_000,
) -> Params:
    """Denoising-autoencoder pretraining of the MLP's hidden layers.

    The encoder is the MLP without its output layer; a mirrored linear decoder
    reconstructs the clean input from a copy with Gaussian noise. Unlabelled
    factor vectors (all valid pixels, or all table rows) are the data.

    Returns:
        Initial parameters: the encoder's trained weights, a fresh output layer.
    """
    gen = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if data.shape[0] > max_samples:
        data = data[torch.randperm(data.shape[0], generator=gen)[:max_samples]]
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    widths = [linears[0].in_features] + [m.out_features for m in linears[:-1]]
    encoder = nn.Sequential(*list(model.net)[:-1])
    decoder_layers: list[nn.Module] = []
    for a, b in zip(widths[::-1][:-1], widths[::-1][1:], strict=False):
        decoder_layers += [nn.Linear(a, b), nn.ReLU()]
    decoder = nn.Sequential(*decoder_layers[:-1])
    opt = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=lr)
    n = data.shape[0]
    for _ in range(max(0, epochs)):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            clean = data[perm[i : i + batch_size]]
            noisy = clean + noise * torch.randn(clean.shape, generator=gen)
            loss = F.mse_loss(decoder(encoder(noisy)), clean)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return init_params(model)


def meta_train(
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    config: MetaConfig,
    seed: int = 0,
    unlabelled: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
    impl: str = "vmap",
) -> tuple[SusceptibilityMLP, MetaState]:
    """Meta-train the MLP initialisation over blocks.

    Args:
        x: Normalised features (n, d).
        y: Labels 0/1 (n,).
        blocks: Block ID per sample (n,).
        config: Hyper-parameters.
        seed: Random seed (initialisation, task sampling, pretraining).
        unlabelled: Feature vectors for DAE pretraining (default: ``x``).
        progress: Called with the fraction done.
        impl: ``vmap`` or ``loop`` (same maths; ``vmap`` is faster).

    Returns:
        The model skeleton and the meta-learned state.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        return _meta_train(x, y, blocks, config, seed, unlabelled, progress, impl)
    finally:
        torch.set_num_threads(threads)


def _meta_train(
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    config: MetaConfig,
    seed: int,
    unlabelled: np.ndarray | None,
    progress: Callable[[float], None] | None,
    impl: str,
) -> tuple[SusceptibilityMLP, MetaState]:
    torch.manual_seed(seed)
    model = SusceptibilityMLP(x.shape[1], config.hidden)
    if config.pretrain_epochs > 0:
        params = pretrain_dae(
            model,
            x if unlabelled is None else unlabelled,
            config.pretrain_epochs,
            noise=config.pretrain_noise,
            seed=seed,
        )
    else:
        params = init_params(model)
    for p in params.values():
        p.requires_grad_(True)
    lrs = {k: torch.tensor(float(config.inner_lr)) for k in params}
    trainable = list(params.values())
    if config.learn_inner_lr:
        for v in lrs.values():
            v.requires_grad_(True)
        trainable += list(lrs.values())
    opt = torch.optim.Adam(trainable, lr=config.meta_lr, weight_decay=config.weight_decay)
    sampler = TaskSampler(
        x, y, blocks, config.support, config.query, seed=seed, min_query=config.min_query
    )
    history: list[float] = []
    for it in range(config.iterations):
        batch = sampler.sample(config.tasks_per_batch, config.weight_by_samples)
        gp, glr, loss = meta_gradients(
            model, params, lrs, batch, config.inner_steps, config.second_order, impl
        )
        for k, v in params.items():
            v.grad = gp[k]
        if config.learn_inner_lr:
            for k, v in lrs.items():
                v.grad = glr[k]
        opt.step()
        if config.learn_inner_lr:
            with torch.no_grad():
                for v in lrs.values():
                    v.clamp_(min=0.0)
        history.append(loss)
        if progress is not None and (it % 50 == 0 or it == config.iterations - 1):
            progress((it + 1) / config.iterations)
    state = MetaState(
        params={k: v.detach().clone() for k, v in params.items()},
        inner_lrs={k: v.detach().clone() for k, v in lrs.items()},
        history=history,
    )
    return model, state


def adapt_many(
    model: nn.Module,
    state: MetaState,
    tasks: list[tuple[np.ndarray, np.ndarray]],
    steps: int,
) -> list[Params]:
    """Adapt the meta-learned initialisation to several tasks at once.

    Args:
        model: The MLP skeleton.
        state: Meta-learned parameters and inner learning rates.
        tasks: ``(x, y)`` per task; sizes may differ (padded with zero weights).
        steps: Inner steps (the same as at meta-training).

    Returns:
        Adapted parameters per task (detached).
    """
    if not tasks:
        return []
    width = max(len(t[1]) for t in tasks)
    d = tasks[0][0].shape[1]
    xs = torch.zeros(len(tasks), width, d)
    ys = torch.zeros(len(tasks), width, dtype=torch.int64)
    ws = torch.zeros(len(tasks), width)
    for i, (tx, ty) in enumerate(tasks):
        n = len(ty)
        xs[i, :n] = torch.as_tensor(np.asarray(tx, dtype=np.float32))
        ys[i, :n] = torch.as_tensor(np.asarray(ty, dtype=np.int64))
        ws[i, :n] = 1.0
    params = {k: v.detach() for k, v in state.params.items()}
    lrs = {k: v.detach() for k, v in state.inner_lrs.items()}

    def one(x: Tensor, y: Tensor, w: Tensor) -> Params:
        return adapt(model, params, lrs, x, y, w, steps, second_order=False)

    adapted = vmap(one)(xs, ys, ws)
    return [{k: v[i].detach().clone() for k, v in adapted.items()} for i in range(len(tasks))]


def predict_proba(model: nn.Module, params: Params, x: np.ndarray | Tensor) -> np.ndarray:
    """Probability of landslide (class 1) for features ``x`` (n, d)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, Tensor) else x
    with torch.no_grad():
        logits = functional_call(model, params, (xt,))
        return torch.softmax(logits, dim=-1)[:, 1].numpy()


def time_iterations(
    model: nn.Module,
    state: MetaState,
    sampler: TaskSampler,
    config: MetaConfig,
    impl: str,
    iterations: int = 20,
) -> float:
    """Meta-iterations per second of ``impl`` (gradients and Adam step; batches drawn first)."""
    batches = [sampler.sample(config.tasks_per_batch) for _ in range(iterations + 2)]
    params = {k: v.detach().clone().requires_grad_(True) for k, v in state.params.items()}
    lrs = {k: v.detach().clone() for k, v in state.inner_lrs.items()}
    opt = torch.optim.Adam(list(params.values()), lr=config.meta_lr)

    def step(batch: TaskBatch) -> None:
        gp, _, _ = meta_gradients(
            model, params, lrs, batch, config.inner_steps, config.second_order, impl
        )
        for k, v in params.items():
            v.grad = gp[k]
        opt.step()

    for b in batches[:2]:  # warm-up
        step(b)
    start = time.perf_counter()
    for b in batches[2:]:
        step(b)
    elapsed = time.perf_counter() - start
    return iterations / max(elapsed, 1e-9)


def state_tensors(state: MetaState, prefix: str = "init.") -> dict[str, Tensor]:
    """Flatten a meta state into named tensors for the model file."""
    out = {f"{prefix}{k}": v for k, v in state.params.items()}
    out.update({f"inner_lr.{k}": v.reshape(1) for k, v in state.inner_lrs.items()})
    return out


def state_from_tensors(tensors: dict[str, Tensor], prefix: str = "init.") -> MetaState:
    """Inverse of :func:`state_tensors`."""
    params = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    lrs = {
        k[len("inner_lr.") :]: v.reshape(())
        for k, v in tensors.items()
        if k.startswith("inner_lr.")
    }
    return MetaState(params=params, inner_lrs=lrs)


def n_parameters(hidden: tuple[int, ...], d: int) -> int:
    """Parameter count of the MLP (for logs)."""
    widths = [d, *hidden, 2]
    return sum(a * b + b for a, b in itertools.pairwise(widths))
