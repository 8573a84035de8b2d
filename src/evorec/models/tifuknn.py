"""TIFU-KNN at item level (Hu et al., SIGIR 2020; the decay rules of the authors' reference code).

The user's baskets (history given in the batch) become a time-decayed item vector (within-group
decay ``r_b``, ``m`` groups, across-group decay ``r_g``; :func:`evorec.models.nbr.tifu_weights`);
the ``k`` nearest training users' vectors (cosine or Euclidean, among the users with training
history; a user is never its own neighbour) are averaged::

    score = alpha * own (B, n_items) + (1 - alpha) * mean of k neighbours (B, n_items)
            + 1e-9 * popularity_prior                  # orders items without signal

``fit`` computes the neighbour pool: every training user's vector, kept sparse
(n_users x n_items) and saved with the checkpoint as CSR arrays (``get_extra_state``). The
category-level forecaster uses the same math (:mod:`evorec.forecasting.nbr`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from scipy import sparse
from torch import Tensor

from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.models.itemknn import popularity_prior
from evorec.models.nbr import batch_cells, nearest, neighbour_mean, tifu_cells, training_cells
from evorec.models.pop import item_counts, training_events
from evorec.models.registry import register_model
from evorec.types import SequenceBatch

PRIOR_SCALE = 1e-9


class TifuKNNConfig(ModelConfig):
    r_b: float = Field(0.9, gt=0, le=1, description="within-group decay per basket")
    r_g: float = Field(0.7, gt=0, le=1, description="across-group decay")
    m: int = Field(7, ge=1, description="groups of consecutive baskets")
    k: int = Field(300, ge=1, description="nearest training users")
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the user's own vector (1 - alpha: the neighbours')")
    metric: Literal["cosine", "euclidean"] = "cosine"


@register_model("tifuknn", TifuKNNConfig)
class TifuKNN(Recommender):
    trainable = False
    causal = True  # the batch's history and the fitted pool only

    def __init__(self, config: TifuKNNConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        self.register_buffer("prior", torch.zeros(sizes.n_items, dtype=torch.float64))  # (n_items,)
        self.register_buffer("fitted", torch.tensor(False))
        self.pool = sparse.csr_matrix((0, sizes.n_items))  # (n_users, n_items) training users' vectors

    def fit(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        cfg: TifuKNNConfig = self.config
        c, _ = training_cells(train)
        self.pool = tifu_cells(c.row, c.basket, c.item, c.n_baskets, self.n_items, cfg.r_b, cfg.r_g, cfg.m, dense=False)
        counts = item_counts(training_events(train).item, self.n_items)
        self.prior.copy_(torch.from_numpy(PRIOR_SCALE * popularity_prior(counts)))
        self.fitted.fill_(True)

    def get_extra_state(self) -> dict:
        p = self.pool.tocsr()
        return {"indptr": torch.from_numpy(p.indptr.astype(np.int64)), "indices": torch.from_numpy(p.indices.astype(np.int64)),
                "data": torch.from_numpy(p.data.astype(np.float64)), "rows": torch.tensor(p.shape[0])}

    def set_extra_state(self, state: dict) -> None:
        self.pool = sparse.csr_matrix(
            (state["data"].numpy(), state["indices"].numpy(), state["indptr"].numpy()), shape=(int(state["rows"]), self.n_items)
        )

    def vectors(self, batch: SequenceBatch) -> tuple[sparse.csr_matrix, sparse.csr_matrix | None]:
        """(own (B, n_items), neighbours' mean (B, n_items) or None when alpha = 1), sparse."""
        cfg: TifuKNNConfig = self.config
        c = batch_cells(batch)
        own = tifu_cells(c.row, c.basket, c.item, c.n_baskets, self.n_items, cfg.r_b, cfg.r_g, cfg.m, dense=False)  # (B, n_items)
        if cfg.alpha >= 1 or self.pool.shape[0] == 0:
            return own, None
        users = batch.users.cpu().numpy().astype(np.int64)
        exclude = np.where((users >= 0) & (users < self.pool.shape[0]), users, -1)  # never its own neighbour
        idx, ok = nearest(own, self.pool, cfg.k, cfg.metric, exclude)  # (B, k)
        return own, neighbour_mean(self.pool, idx, ok, cfg.k)

    def score(self, batch: SequenceBatch) -> Tensor:
        if not bool(self.fitted):
            raise RuntimeError("TifuKNN: call fit() (or load a checkpoint) before scoring")
        cfg: TifuKNNConfig = self.config
        own, nn = self.vectors(batch)
        s = cfg.alpha * own.toarray() if nn is None else cfg.alpha * own.toarray() + (1 - cfg.alpha) * nn.toarray()  # (B, n_items)
        scores = torch.from_numpy(s) + self.prior.cpu()
        scores[:, 0] = NEG_INF
        return scores.to(batch.items.device)

    def encode(self, batch: SequenceBatch) -> Tensor:
        return torch.ones(batch.size, 1, device=batch.items.device)
