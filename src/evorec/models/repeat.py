"""A repeat-purchase model with purchase-interval awareness (ReCANet-style, small and explainable).

ReCANet (Ariannezhad et al., SIGIR 2022) scores only the items a user bought before, from each
user-item history of repurchase gaps. This model keeps that idea in a form one can read: a
logistic *hazard* of "item i is in the user's next basket", over features of the user-item pair
computed from the history (times in days; the query time is the batch's ``query_ts``):

====================  ==========================================================================
feature               meaning
====================  ==========================================================================
log_count             log1p(baskets holding the item)
share                 baskets holding the item / the user's baskets
log_days_since        log1p(days since the item's last purchase)
log_baskets_since     log1p(the user's baskets since the item's last one)
has_cycle             1 if bought in >= 2 baskets (a repurchase gap exists)
log_due               log1p(days since last / mean gap between the item's baskets); 0 if no gap
off_cycle             |log((days since last + 1) / (mean gap + 1))|: how far from "due"
log_mean_gap          log1p(mean gap in days); 0 if no gap
item_repeat_rate      share of the item's training buyers who bought it in >= 2 baskets (smoothed)
log_popularity        log1p(training purchases of the item)
log_user_baskets      log1p(the user's baskets)
decayed               sum over the item's baskets of 0.9 ** (baskets after it): recency-weighted count
recent_share          share of the user's last 5 baskets holding the item
log_visit_gap         log1p(days since the user's last basket)   (user-level: interactions, gbdt)
log_user_cycle        log1p(the user's mean days between baskets) (user-level)
log_item_cycle        log1p(the item's mean repurchase gap over all its training repeaters, smoothed)
log_item_due          log1p(days since last / the item's mean gap): due by the population's cycle
log_cat_baskets       log1p(the user's baskets holding the item's category)
cat_loyalty           baskets holding the item / baskets holding its category: the user's pick
                      among substitutes
log_cat_since         log1p(days since the user last bought the category)
====================  ==========================================================================

``fit`` builds samples from the training histories: for each user, each of the last ``cuts``
baskets (with history before it) is a target basket; every item of the history before it is a
sample labelled 1 if the item is in that basket. A standardised L2 logistic regression (scikit-
learn, lbfgs) learns the weights; they are buffers, so a checkpoint carries them and
:meth:`RepeatModel.explain` can show a score's parts.

``score``: history items get ``1 + p`` (p the hazard, in (0, 1)), every other item its
popularity prior in (0, 0.5]: a repeat-only ranking, popularity after. :meth:`repeat_probabilities`
gives p to the combination model (``trex``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from evorec.models.base import NEG_INF, DataSizes, ModelConfig, Recommender
from evorec.models.itemknn import popularity_prior
from evorec.models.nbr import SECONDS_PER_DAY, Cells, batch_cells, training_cells
from evorec.models.pop import item_counts, training_events
from evorec.models.registry import register_model
from evorec.types import SequenceBatch

logger = logging.getLogger(__name__)

FEATURES = (
    "log_count", "share", "log_days_since", "log_baskets_since", "has_cycle", "log_due", "off_cycle", "log_mean_gap",
    "item_repeat_rate", "log_popularity", "log_user_baskets", "decayed", "recent_share", "log_visit_gap", "log_user_cycle",
    "log_item_cycle", "log_item_due", "log_cat_baskets", "cat_loyalty", "log_cat_since",
)
RECENT = 5  # baskets behind recent_share
DECAY = 0.9  # per basket, behind decayed
RATE_PRIOR = 5.0  # pseudo-buyers pulling an item's repeat rate towards the overall rate


class RepeatConfig(ModelConfig):
    learner: Literal["logistic", "gbdt", "rank"] = Field(
        "logistic", description="logistic: a standardised L2 logistic regression (weights readable); gbdt: LightGBM "
        "(binary, the same features; interactions such as 'due' x 'user's cycle'); rank: LightGBM lambdarank with one "
        "group per (user, target basket), optimising the order within a user (scores then are not probabilities)",
    )
    trees: int = Field(200, ge=1, description="gbdt: boosting rounds")
    leaves: int = Field(31, ge=2, description="gbdt: leaves per tree")
    cuts: int = Field(4, ge=1, description="target baskets per training user (its last ones) for the fit")
    l2: float = Field(1.0, gt=0, description="inverse L2 strength C of the logistic regression")
    max_samples: int = Field(2_000_000, ge=1000, description="training samples kept (a seeded random subset above this)")
    seed: int = 0


@dataclass
class ItemStats:
    """Per-item numbers from the training data (each (n_items,))."""

    rate: np.ndarray  # smoothed share of buyers with >= 2 baskets holding the item
    pop: np.ndarray  # training purchase lines
    cycle: np.ndarray  # smoothed mean repurchase gap in days
    category: np.ndarray  # category index (0 = unknown)


def pair_features(c: Cells, query_ts: np.ndarray, stats: ItemStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, item, X): one row of ``FEATURES`` per distinct (row, item) of the cells; ``query_ts``
    (R,) the time each row's next basket is asked for."""
    item_rate, item_pop = stats.rate, stats.pop
    if not len(c.row):
        z = np.zeros(0, np.int64)
        return z, z, np.zeros((0, len(FEATURES)))
    n = np.int64(max(int(c.item.max()) + 1, len(item_rate)))
    key = c.row * n + c.item
    order = np.lexsort((c.basket, key))  # by pair, then basket
    key_s, b_s, ts_s = key[order], c.basket[order], c.ts[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
    ends = np.r_[starts[1:], len(key_s)]
    cnt = (ends - starts).astype(np.float64)
    pair = np.repeat(np.arange(len(starts)), ends - starts)  # (E,) pair of each sorted cell
    row, item = key_s[starts] // n, key_s[starts] % n
    ago = c.n_baskets[key_s // n] - 1 - b_s  # (E,) baskets after the cell's one
    decayed = np.bincount(pair, weights=DECAY ** ago.astype(np.float64), minlength=len(starts))
    recent = np.bincount(pair, weights=(ago < RECENT).astype(np.float64), minlength=len(starts))
    R = len(c.n_baskets)
    r_last = c.basket_ts[np.arange(R), np.maximum(c.n_baskets - 1, 0)].astype(np.float64)  # (R,) each row's last basket time
    r_first = c.basket_ts[:, 0].astype(np.float64)
    visit_gap = np.maximum(query_ts.astype(np.float64) - r_last, 0) / SECONDS_PER_DAY  # (R,)
    cycle = (r_last - r_first) / SECONDS_PER_DAY / np.maximum(c.n_baskets - 1, 1)  # (R,)
    first_ts, last_ts = ts_s[starts], ts_s[ends - 1]
    last_b = b_s[ends - 1]
    nb = c.n_baskets[row].astype(np.float64)
    since = np.maximum(query_ts[row].astype(np.float64) - last_ts, 0) / SECONDS_PER_DAY
    has = cnt >= 2
    gap = np.where(has, (last_ts - first_ts) / SECONDS_PER_DAY / np.maximum(cnt - 1, 1), 0.0)
    # the category: distinct (row, basket, category) cells, per (row, category) count and last time
    C = np.int64(max(int(stats.category.max()) + 1, 1))
    cat_cell = stats.category[c.item]  # (E,)
    ck, cinv = np.unique((c.row * (int(c.basket.max()) + 1) + c.basket) * C + cat_cell, return_inverse=True)
    rc = (ck // C) // (int(c.basket.max()) + 1) * C + ck % C  # (CK,) (row, category) of each distinct cell
    rc_u, rc_inv = np.unique(rc, return_inverse=True)
    cat_count = np.bincount(rc_inv.ravel(), minlength=len(rc_u)).astype(np.float64)
    cat_last = np.zeros(len(rc_u))
    np.maximum.at(cat_last, rc_inv.ravel()[cinv.ravel()], c.ts.astype(np.float64))
    at = np.searchsorted(rc_u, row * C + stats.category[item])  # (P,) each pair's (row, category)
    p_cat_count, p_cat_last = cat_count[at], cat_last[at]
    cat_since = np.maximum(query_ts[row].astype(np.float64) - p_cat_last, 0) / SECONDS_PER_DAY
    icycle = stats.cycle[item]
    X = np.column_stack([
        np.log1p(cnt), cnt / np.maximum(nb, 1), np.log1p(since), np.log1p(nb - 1 - last_b), has.astype(np.float64),
        np.where(has, np.log1p(since / np.maximum(gap, 1e-3)), 0.0), np.where(has, np.abs(np.log((since + 1) / (gap + 1))), 0.0),
        np.log1p(gap), item_rate[item], np.log1p(item_pop[item]), np.log1p(nb),
        decayed, recent / np.minimum(np.maximum(nb, 1), RECENT), np.log1p(visit_gap[row]), np.log1p(cycle[row]),
        np.log1p(icycle), np.log1p(since / np.maximum(icycle, 1e-3)), np.log1p(p_cat_count), cnt / np.maximum(p_cat_count, 1),
        np.log1p(cat_since),
    ])
    return row, item, X


def item_repeat_rates(c: Cells, n_items: int) -> np.ndarray:
    """(n_items,) smoothed share of each item's buyers with >= 2 baskets holding it."""
    key = c.row * np.int64(n_items) + c.item
    pairs, cnt = np.unique(key, return_counts=True)
    items = pairs % n_items
    buyers = np.bincount(items, minlength=n_items).astype(np.float64)
    repeaters = np.bincount(items, weights=(cnt >= 2).astype(np.float64), minlength=n_items)
    overall = repeaters.sum() / max(buyers.sum(), 1)
    return (repeaters + RATE_PRIOR * overall) / (buyers + RATE_PRIOR)


def item_cycles(c: Cells, n_items: int) -> np.ndarray:
    """(n_items,) each item's mean gap in days between consecutive baskets holding it, averaged over
    its repeat buyers (mean of their mean gaps), smoothed towards the overall mean by RATE_PRIOR."""
    n = np.int64(n_items)
    key = c.row * n + c.item
    order = np.lexsort((c.ts, key))
    k, t = key[order], c.ts[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(k)] if len(k) else np.zeros(0, np.int64)
    cnt = ends - starts
    rep = cnt >= 2
    gap = np.zeros(len(starts))
    gap[rep] = (t[ends[rep] - 1] - t[starts[rep]]) / SECONDS_PER_DAY / (cnt[rep] - 1)
    items = (k[starts] % n) if len(k) else np.zeros(0, np.int64)
    s = np.bincount(items[rep], weights=gap[rep], minlength=n_items)
    m = np.bincount(items[rep], minlength=n_items).astype(np.float64)
    overall = s.sum() / max(m.sum(), 1) if m.sum() else 30.0
    return (s + RATE_PRIOR * overall) / (m + RATE_PRIOR)


def training_samples(c: Cells, cuts: int, stats: ItemStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, group) from each user's last ``cuts`` baskets as targets (history: the baskets
    before); ``group`` numbers the (user, target basket) of each sample, contiguous."""
    Xs, ys, gs = [], [], []
    n = np.int64(len(stats.rate))
    for j in range(1, cuts + 1):
        target = c.n_baskets - j  # (R,) target basket of each row; needs >= 1 basket before it
        ok = target >= 1
        if not ok.any():
            break
        t_cell = c.basket == target[c.row]
        h_cell = c.basket < target[c.row]
        hist = Cells(c.row[h_cell], c.basket[h_cell], c.item[h_cell], c.ts[h_cell], np.where(ok, target, 0), c.basket_ts)
        q = c.basket_ts[np.arange(len(target)), np.maximum(target, 0)]
        row, item, X = pair_features(hist, q, stats)
        tgt = np.unique(c.row[t_cell] * n + c.item[t_cell])
        key = row * n + item
        y = np.isin(key, tgt)
        Xs.append(X)
        ys.append(y)
        gs.append(row + (j - 1) * len(target))
    if not Xs:
        return np.zeros((0, len(FEATURES))), np.zeros(0, bool), np.zeros(0, np.int64)
    return np.concatenate(Xs), np.concatenate(ys), np.concatenate(gs)


@register_model("repeat", RepeatConfig)
class RepeatModel(Recommender):
    """Logistic repurchase hazard over the user's item history; popularity for the rest."""

    trainable = False
    causal = True  # the batch's history and query time only

    def __init__(self, config: RepeatConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        F = len(FEATURES)
        self.register_buffer("coef", torch.zeros(F, dtype=torch.float64))  # (F,) on standardised features
        self.register_buffer("intercept", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(F, dtype=torch.float64))  # (F,)
        self.register_buffer("scale", torch.ones(F, dtype=torch.float64))  # (F,)
        self.register_buffer("item_rate", torch.zeros(sizes.n_items, dtype=torch.float64))  # (n_items,)
        self.register_buffer("item_pop", torch.zeros(sizes.n_items, dtype=torch.float64))  # (n_items,)
        self.register_buffer("item_cycle", torch.zeros(sizes.n_items, dtype=torch.float64))  # (n_items,) days
        cat = sizes.item_category if sizes.item_category is not None else (0,) * sizes.n_items
        self.register_buffer("item_category", torch.tensor(cat, dtype=torch.int64), persistent=False)  # (n_items,) from the sizes
        self.register_buffer("prior", torch.zeros(sizes.n_items, dtype=torch.float64))  # (n_items,) in (0, 0.5]
        self.register_buffer("fitted", torch.tensor(False))
        self.booster = None  # gbdt: a lightgbm.Booster, saved as its model text (get_extra_state)

    def get_extra_state(self) -> dict:
        text = self.booster.model_to_string() if self.booster is not None else ""
        return {"booster": torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8) if text else torch.zeros(0, dtype=torch.uint8)}

    def set_extra_state(self, state: dict) -> None:
        raw = state["booster"]
        if len(raw):
            import lightgbm as lgb

            self.booster = lgb.Booster(model_str=bytes(raw.numpy().tobytes()).decode())
        else:
            self.booster = None

    def fit(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        from sklearn.linear_model import LogisticRegression

        cfg: RepeatConfig = self.config
        counts = item_counts(training_events(train).item, self.n_items)
        c, _ = training_cells(train)
        rate = item_repeat_rates(c, self.n_items)
        cycle = item_cycles(c, self.n_items)
        X, y, group = training_samples(c, cfg.cuts, ItemStats(rate, counts, cycle, self.item_category.numpy()))
        if len(y) > cfg.max_samples:  # a seeded subset of whole groups (rank) or of samples
            rng = np.random.default_rng(cfg.seed)
            if cfg.learner == "rank":
                g = np.unique(group)
                take = rng.permutation(g)
                sizes = np.bincount(group)[take]
                take = take[np.cumsum(sizes) <= cfg.max_samples]
                keep = np.flatnonzero(np.isin(group, take))
            else:
                keep = np.sort(rng.choice(len(y), cfg.max_samples, replace=False))
            X, y, group = X[keep], y[keep], group[keep]
        self.item_rate.copy_(torch.from_numpy(rate))
        self.item_pop.copy_(torch.from_numpy(counts))
        self.item_cycle.copy_(torch.from_numpy(cycle))
        self.prior.copy_(torch.from_numpy(0.5 * popularity_prior(counts)))
        self.booster = None
        if len(y) and 0 < y.sum() < len(y) and cfg.learner in ("gbdt", "rank"):
            import lightgbm as lgb

            ds = lgb.Dataset(X, y.astype(np.float64), feature_name=list(FEATURES))
            if cfg.learner == "rank":
                has_pos = np.bincount(group, weights=y.astype(np.float64)) > 0  # groups without a positive teach nothing
                keep = has_pos[group]
                X, y, group = X[keep], y[keep], group[keep]
                ds = lgb.Dataset(X, y.astype(np.float64), group=np.bincount(group)[np.unique(group)], feature_name=list(FEATURES))
            params = {"objective": "binary" if cfg.learner == "gbdt" else "lambdarank", "num_leaves": cfg.leaves, "learning_rate": 0.05, "min_data_in_leaf": 50,
                      "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "seed": cfg.seed,
                      "deterministic": True, "num_threads": 2, "verbose": -1}
            if cfg.learner == "rank":
                params["lambdarank_truncation_level"] = 20
                params["eval_at"] = [10]
            self.booster = lgb.train(params, ds, cfg.trees)
            logger.info("repeat hazard (gbdt, %d trees) fitted on %d samples (%.2f%% positive)", cfg.trees, len(y), 100 * y.mean())
        elif len(y) and 0 < y.sum() < len(y):
            mu, sd = X.mean(0), X.std(0)
            sd = np.where(sd > 0, sd, 1.0)
            lr = LogisticRegression(C=cfg.l2, max_iter=500).fit((X - mu) / sd, y)
            self.coef.copy_(torch.from_numpy(lr.coef_[0]))
            self.intercept.fill_(float(lr.intercept_[0]))
            self.mean.copy_(torch.from_numpy(mu))
            self.scale.copy_(torch.from_numpy(sd))
            logger.info("repeat hazard fitted on %d samples (%.2f%% positive): %s", len(y), 100 * y.mean(),
                        ", ".join(f"{f} {w:+.2f}" for f, w in zip(FEATURES, lr.coef_[0])))
        elif len(y) and y.all():
            logger.warning("repeat: every training sample is a repurchase (%d samples): every history item gets p = 1", len(y))
            self.intercept.fill_(30.0)
        else:  # no repurchase at all (e.g. review logs): no history item is ever due
            logger.warning("repeat: no repurchase in the training data (%d samples): every history item gets p ~ 0, so a "
                           "trex combination ranks like its explore member", len(y))
            self.intercept.fill_(-30.0)
        self.fitted.fill_(True)

    def _pairs(self, batch: SequenceBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = batch_cells(batch)
        stats = ItemStats(self.item_rate.cpu().numpy(), self.item_pop.cpu().numpy(), self.item_cycle.cpu().numpy(), self.item_category.cpu().numpy())
        return pair_features(c, batch.query_ts.cpu().numpy().astype(np.int64), stats)

    def repeat_probabilities(self, batch: SequenceBatch) -> tuple[Tensor, Tensor]:
        """((B, n_items) hazard p of each history item (0 elsewhere), (B, n_items) bool: in the history)."""
        if not bool(self.fitted):
            raise RuntimeError("RepeatModel: call fit() (or load a checkpoint) before scoring")
        row, item, X = self._pairs(batch)
        if self.booster is not None:
            z = self.booster.predict(X, raw_score=True) if len(X) else np.zeros(0)
        else:
            z = ((X - self.mean.cpu().numpy()) / self.scale.cpu().numpy()) @ self.coef.cpu().numpy() + float(self.intercept)
        p = torch.zeros(batch.size, self.n_items, dtype=torch.float64)
        hist = torch.zeros(batch.size, self.n_items, dtype=torch.bool)
        r, i = torch.from_numpy(row), torch.from_numpy(item)
        p[r, i] = torch.from_numpy(1.0 / (1.0 + np.exp(-z)))
        hist[r, i] = True
        return p.to(batch.items.device), hist.to(batch.items.device)

    def score(self, batch: SequenceBatch) -> Tensor:
        p, hist = self.repeat_probabilities(batch)
        scores = torch.where(hist, 1.0 + p, self.prior.to(p.device).expand_as(p))  # (B, n_items) repeats first
        scores[:, 0] = NEG_INF
        return scores

    def explain(self, batch: SequenceBatch, row: int, item: int) -> dict[str, float]:
        """Each feature's value and its contribution (weight x standardised value) to the logit of
        ``item`` for batch row ``row``; empty when the item is not in the row's history."""
        r, i, X = self._pairs(batch)
        hit = np.flatnonzero((r == row) & (i == item))
        if not len(hit):
            return {}
        x = X[hit[0]]
        contrib = (x - self.mean.cpu().numpy()) / self.scale.cpu().numpy() * self.coef.cpu().numpy()
        return {**{f"{f}": float(v) for f, v in zip(FEATURES, x)}, **{f"{f} (logit)": float(v) for f, v in zip(FEATURES, contrib)},
                "intercept": float(self.intercept)}

    def encode(self, batch: SequenceBatch) -> Tensor:
        return torch.ones(batch.size, 1, device=batch.items.device)
