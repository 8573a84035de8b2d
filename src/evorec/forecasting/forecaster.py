"""The learned interest forecaster: a sequence encoder from the model registry plus a
multi-horizon category head, trained on future-window targets, calibrated on validation.

For a sample (user, cutoff T) and horizon h the head gives two (C,) outputs:

- distribution logits -> softmax = P(an event of the window falls in category c);
- engagement logits -> sigmoid = P(the user engages with c at all in the window).

Both are ``per-category features -> MLP`` (the history summaries of
:mod:`evorec.forecasting.windows`, the population trend and the category Markov step, so the
model can express every baseline) plus an interaction of the encoder's user state with a
per-horizon category embedding (what the sequence adds). Training: soft cross-entropy of the
distribution against the window's realised category shares, plus BCE of engagement, only on
windows fully observed before the validation cutoff. Early stopping on validation loss; then
a temperature per horizon (distribution) and an isotonic map per horizon (engagement) are fitted
on the validation cutoff.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from evorec.data.batches import gather, to_batch, trim_padding
from evorec.data.sequences import SequenceData
from evorec.errors import InputError
from evorec.forecasting.baselines import Context
from evorec.forecasting.calibration import IsotonicCalibrator, TemperatureScaler
from evorec.forecasting.metrics import per_user_forecast_metrics
from evorec.forecasting.ranker import RankerConfig
from evorec.forecasting.windows import HistoryFeatures, WindowSamples, history_features
from evorec.models.base import DataSizes
from evorec.models.registry import build_model
from evorec.utils.timeutil import DAY

logger = logging.getLogger(__name__)


class ForecasterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["neural", "ranker", "tifu_knn"] = Field(
        "neural",
        description="neural: the sequence encoder + category head below; ranker: the stacked gradient-boosted ranker "
        "(evorec.forecasting.ranker); tifu_knn: TIFU-KNN with the setting tuned on validation",
    )
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    encoder: str | None = Field("gru4rec", description="a sequence model from the registry, or null for features only")
    encoder_config: dict[str, Any] = Field(
        default_factory=lambda: {"embed_dim": 32, "hidden_size": 64, "dropout": 0.2, "side": {"use_category": True, "time": "gap_buckets"}}
    )
    max_len: int = Field(50, ge=1, description="latest events the encoder reads")
    hidden: int = Field(64, ge=4, description="width of the per-category feature MLP")
    state_dim: int = Field(16, ge=1, description="width of the user-state x category interaction")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(3, ge=1)
    engage_weight: float = Field(1.0, ge=0)
    max_train_samples: int = Field(100_000, ge=1, description="random subset of the training samples per run")
    time_budget_s: float | None = Field(None, gt=0)
    seed: int = 0


def feature_tensor(feats: HistoryFeatures, samples: WindowSamples, ctx: Context) -> np.ndarray:
    """(S, H, C, F) float32 per-category features of every sample and horizon."""
    S, H, C = samples.counts.shape
    scale = float(DAY) if samples.unit == "seconds" else 1.0
    base = [np.log1p(feats.past)]
    base += [np.log1p(d) for d in feats.decayed]
    tot = feats.decayed.sum(-1, keepdims=True)
    base += list(np.divide(feats.decayed, tot, out=np.zeros_like(feats.decayed), where=tot > 0))
    rec = np.where(np.isfinite(feats.recency), np.log1p(feats.recency / scale), -1.0)  # never seen: -1
    base += [rec, np.isfinite(feats.recency).astype(np.float32)]
    P = ctx.transitions
    mk = np.zeros((S, C), np.float32)
    if P is not None:
        Cm = P.shape[0]
        has = feats.last_cat > 0
        mk[has, :Cm] = P[np.minimum(feats.last_cat[has], Cm - 1)]
    base.append(mk)
    base_arr = np.stack(base, -1).astype(np.float32)  # (S, C, Fb)
    out = np.empty((S, H, C, base_arr.shape[-1] + 2), np.float32)
    cut = np.unique(samples.cutoff)
    for j, h in enumerate(samples.horizons):
        pop = np.zeros((S, C), np.float32)
        for c in cut:
            pop[samples.cutoff == c] = ctx.population(int(c), int(h))
        out[:, j, :, :-2] = base_arr
        out[:, j, :, -2] = np.log1p(feats.last[j])
        out[:, j, :, -1] = np.log(pop + 1e-6)
    return out


class Featurizer:
    """Features of any subset of samples, computed on demand (a batch at a time) so memory stays
    bounded by the batch, not by samples x categories x features."""

    def __init__(self, seq: SequenceData, samples: WindowSamples, ctx: Context, half_lives: list[float]):
        self.seq, self.samples, self.ctx, self.half_lives = seq, samples, ctx, list(half_lives)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        sub = self.samples.subset(idx)
        return feature_tensor(history_features(self.seq, sub, self.half_lives), sub, self.ctx)

    @property
    def n_features(self) -> int:
        return int(self(np.arange(min(1, len(self.samples)))).shape[-1]) if len(self.samples) else 0


class ForecastNet(nn.Module):
    """(batch, features (B, H, C, F)) -> distribution and engagement logits, each (B, H, C)."""

    def __init__(self, cfg: ForecasterConfig, sizes: DataSizes, n_horizons: int, n_features: int):
        super().__init__()
        self.cfg = cfg
        C, H = sizes.n_categories, n_horizons
        self.feat_mlp = nn.Sequential(
            nn.Linear(n_features, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, 2)
        )
        self.horizon_scale = nn.Parameter(torch.ones(2, H))
        self.bias = nn.Parameter(torch.zeros(2, H, C))
        self.encoder = build_model(cfg.encoder, cfg.encoder_config, sizes) if cfg.encoder else None
        if self.encoder is not None:
            d = self._encoder_dim()
            self.state_proj = nn.Linear(d, 2 * H * cfg.state_dim)
            self.cat_emb = nn.Parameter(torch.randn(2, H, C, cfg.state_dim) * 0.02)

    def _encoder_dim(self) -> int:
        mask = torch.zeros(1, 1, dtype=torch.bool)
        z = torch.zeros(1, 1, dtype=torch.long)
        from evorec.types import SequenceBatch

        with torch.no_grad():
            return int(self.encoder.encode(SequenceBatch(z, z, z, z, mask, torch.zeros(1, dtype=torch.long), z[:, 0])).shape[-1])

    def forward(self, batch, feats: Tensor) -> tuple[Tensor, Tensor]:  # untyped: SequenceBatch
        B, H, C, _ = feats.shape
        f = self.feat_mlp(feats)  # (B, H, C, 2)
        out = f.permute(3, 0, 1, 2) * self.horizon_scale[:, None, :, None] + self.bias[:, None]  # (2, B, H, C)
        if self.encoder is not None:
            st = self.state_proj(self.encoder.encode(batch)).view(B, 2, H, -1)  # (B, 2, H, d)
            inter = torch.einsum("bkhd,khcd->kbhc", st, self.cat_emb)  # (2, B, H, C)
            out = out + inter
        return out[0], out[1]


def _batch(seq: SequenceData, samples: WindowSamples, idx: np.ndarray, max_len: int):
    arrays = trim_padding(gather(seq, samples.hist_start[idx], samples.hist_end[idx], max_len))
    return to_batch(arrays, samples.cutoff[idx], samples.users[idx])


def _loss(dist_logits: Tensor, eng_logits: Tensor, counts: Tensor, observed: Tensor, engage_weight: float) -> Tensor:
    tot = counts.sum(-1)  # (B, H)
    has = observed & (tot > 0)
    target = counts / tot.clamp(min=1)[..., None]
    logp = torch.log_softmax(dist_logits, -1)
    ce = -(target * logp).sum(-1)  # (B, H)
    l_dist = (ce * has).sum() / has.sum().clamp(min=1)
    bce = nn.functional.binary_cross_entropy_with_logits(eng_logits, (counts > 0).float(), reduction="none").mean(-1)  # (B, H)
    l_eng = (bce * observed).sum() / observed.sum().clamp(min=1)
    return l_dist + engage_weight * l_eng


class Forecaster:
    """Trains a :class:`ForecastNet`, calibrates it, predicts calibrated forecasts."""

    def __init__(self, cfg: ForecasterConfig, sizes: DataSizes, horizons: tuple[int, ...], n_features: int):
        self.cfg, self.sizes, self.horizons = cfg, sizes, tuple(int(h) for h in horizons)
        torch.manual_seed(cfg.seed)
        self.net = ForecastNet(cfg, sizes, len(horizons), n_features)
        self.temperature: dict[int, TemperatureScaler] = {}
        self.isotonic: dict[int, IsotonicCalibrator] = {}
        self.rank_source: dict[int, str] = {}  # per horizon: "engagement" or "share" (chosen on validation)
        self.history: list[dict[str, float]] = []

    def _logits(self, seq: SequenceData, samples: WindowSamples, feats: Featurizer, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        outs_d, outs_e = [], []
        with torch.inference_mode():
            for i in range(0, len(samples), batch_size):
                idx = np.arange(i, min(i + batch_size, len(samples)))
                d, e = self.net(_batch(seq, samples, idx, self.cfg.max_len), torch.from_numpy(feats(idx)))
                outs_d.append(d.numpy())
                outs_e.append(e.numpy())
        H, C = len(self.horizons), self.sizes.n_categories
        empty = np.zeros((0, H, C), np.float32)
        return (np.concatenate(outs_d) if outs_d else empty), (np.concatenate(outs_e) if outs_e else empty)

    def fit(self, seq: SequenceData, train: WindowSamples, train_feats: Featurizer, valid: WindowSamples, valid_feats: Featurizer) -> Forecaster:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        keep = np.flatnonzero(train.observed.any(1))
        if len(keep) > cfg.max_train_samples:
            keep = np.sort(rng.choice(keep, cfg.max_train_samples, replace=False))
        if not len(keep):
            raise InputError("no training sample has an observed window: move the validation cutoff later or add training cutoffs")
        opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, bad = float("inf"), None, 0
        t0 = time.perf_counter()
        counts_v = torch.from_numpy(valid.counts)
        obs_v = torch.from_numpy(valid.observed)
        for epoch in range(cfg.epochs):
            self.net.train()
            order = rng.permutation(keep)
            total, n = 0.0, 0
            for i in range(0, len(order), cfg.batch_size):
                idx = np.sort(order[i : i + cfg.batch_size])
                d, e = self.net(_batch(seq, train, idx, cfg.max_len), torch.from_numpy(train_feats(idx)))
                loss = _loss(d, e, torch.from_numpy(train.counts[idx]), torch.from_numpy(train.observed[idx]), cfg.engage_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                opt.step()
                total += loss.detach().item() * len(idx)
                n += len(idx)
            d, e = self._logits(seq, valid, valid_feats)
            v = float(_loss(torch.from_numpy(d), torch.from_numpy(e), counts_v, obs_v, cfg.engage_weight))
            self.history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "valid_loss": v, "seconds": time.perf_counter() - t0})
            logger.info("forecaster epoch %d: train %.4f valid %.4f (%.0fs)", epoch + 1, total / max(n, 1), v, time.perf_counter() - t0)
            if v < best - 1e-5:
                best, bad = v, 0
                best_state = {k: t.detach().clone() for k, t in self.net.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
            if cfg.time_budget_s and time.perf_counter() - t0 > cfg.time_budget_s:
                logger.info("forecaster: time budget reached after epoch %d", epoch + 1)
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.calibrate(seq, valid, valid_feats)
        return self

    def calibrate(self, seq: SequenceData, valid: WindowSamples, valid_feats: Featurizer) -> None:
        d, e = self._logits(seq, valid, valid_feats)
        for j, h in enumerate(self.horizons):
            obs = valid.observed[:, j]
            c = valid.counts[obs, j]
            has = c.sum(-1) > 0
            if not has.any():
                logger.warning("no validation window of horizon %s has events: that horizon stays uncalibrated", h)
                continue
            tot = c[has].sum(-1, keepdims=True)
            self.temperature[h] = TemperatureScaler().fit(d[obs, j][has], c[has] / tot)
            p_eng = 1 / (1 + np.exp(-e[obs, j].astype(np.float64)))
            self.isotonic[h] = IsotonicCalibrator().fit(p_eng, c > 0)
            # Rank categories by whichever head orders the validation windows better (NDCG@10):
            # at short horizons engagement is rare and the share head can rank better.
            past = np.zeros_like(c)  # not used by NDCG
            score = {
                src: float(np.nanmean(per_user_forecast_metrics(_softmax(x), p_eng, c, past, past > 0, ks=(10,))["NDCG@10"]))
                if (c.sum(-1) > 0).any() else 0.0
                for src, x in (("share", d[obs, j]), ("engagement", np.log(p_eng + 1e-12)))
            }
            self.rank_source[h] = max(score, key=score.get)

    def predict(self, seq: SequenceData, samples: WindowSamples, feats: Featurizer) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated (dist, engage), each (S, H, C)."""
        dist, engage, _ = self.predict_ranked(seq, samples, feats)
        return dist, engage

    def predict_ranked(self, seq: SequenceData, samples: WindowSamples, feats: Featurizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dist, engage, rank): ``rank`` (S, H, C) orders the categories: the uncalibrated
        engagement probability (the isotonic map is monotone but flat in places: ties) or the
        share forecast, per horizon as chosen on validation."""
        d, e = self._logits(seq, samples, feats)
        p_eng = 1 / (1 + np.exp(-e.astype(np.float64)))  # (S, H, C) uncalibrated engagement
        dist = np.zeros(d.shape, np.float64)
        engage = np.zeros(e.shape, np.float64)
        rank = p_eng.copy()
        for j, h in enumerate(self.horizons):
            dist[:, j] = self.temperature[h].transform(d[:, j]) if h in self.temperature else _softmax(d[:, j])
            engage[:, j] = self.isotonic[h].transform(p_eng[:, j]) if h in self.isotonic else p_eng[:, j]
            if self.rank_source.get(h) == "share":
                rank[:, j] = _softmax(d[:, j].astype(np.float64))
        return dist, engage, rank

    # -- persistence ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.model_dump(mode="json"),
            "sizes": self.sizes.to_dict(),
            "horizons": list(self.horizons),
            "n_features": int(self.net.feat_mlp[0].in_features),
            "state_dict": self.net.state_dict(),
            "temperature": {str(h): t.to_dict() for h, t in self.temperature.items()},
            "isotonic": {str(h): c.to_dict() for h, c in self.isotonic.items()},
            "rank_source": {str(h): v for h, v in self.rank_source.items()},
            "history": self.history,
        }

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> Forecaster:
        f = cls(ForecasterConfig.model_validate(st["config"]), DataSizes.from_dict(st["sizes"]), tuple(st["horizons"]), st["n_features"])
        f.net.load_state_dict(st["state_dict"])
        f.temperature = {int(h): TemperatureScaler.from_dict(d) for h, d in st["temperature"].items()}
        f.isotonic = {int(h): IsotonicCalibrator.from_dict(d) for h, d in st["isotonic"].items()}
        f.rank_source = {int(h): v for h, v in st.get("rank_source", {}).items()}
        f.history = list(st.get("history", []))
        return f


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)
