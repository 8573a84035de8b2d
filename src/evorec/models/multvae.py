"""Mult-VAE (Liang et al., 2018): a variational autoencoder over the set of items a user touched.

    x_u (bag of the user's items, n_items) -> L2-normalise -> dropout
      -> encoder MLP (tanh; ``hidden_dims``) -> mu, logvar (``latent_dim``)
      -> z = mu + eps * sigma (training only) -> decoder MLP (mirror of the encoder) -> n_items logits

Objective (per user, averaged over the batch), with beta annealed linearly from 0 to
``anneal_cap`` over ``total_anneal_steps`` training steps:

    -sum_i x_ui log softmax(logits)_i  +  beta * KL(q(z | x_u) || N(0, I))

The bag ``x_u`` is a multi-hot of the history's items, or, with ``decay_half_life_days``, each
item weighs 0.5 ** (age / half-life) with age measured from the batch's ``query_ts`` to the item's
latest event (so recent interests dominate). On ordinal datasets ``ts`` is a position, so a
half-life in days means practically no decay there.

**A set model.** Order inside the history is ignored and there is one state per user, not per
position (``causal = False``). As in the paper the training input and the reconstruction target
are the same bag: the user's training events in the window (its inputs plus the last target).
The trainer's next-item ``loss_fn`` is therefore not used; the model's own objective is.

Evaluation is deterministic: ``score`` and ``encode`` use mu (no sampling) and, in eval mode,
no dropout. ``encode`` returns mu (B, latent_dim). ``forward`` returns the decoder's last hidden
layer at mu, repeated at every position, so that generic ``state @ output_embeddings().T +
output_bias()`` code gives the same logits as ``score``.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from evorec.models.base import NEG_INF, DataSizes, LossFn, ModelConfig, SequentialModel
from evorec.models.registry import register_model
from evorec.ops.dropout import Dropout
from evorec.types import SequenceBatch

SECONDS_PER_DAY = 86400.0


class MultVAEConfig(ModelConfig):
    hidden_dims: tuple[int, ...] = Field((600,), description="encoder hidden layers (decoder mirrors them)")
    latent_dim: int = Field(200, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="on the normalised input bag")
    total_anneal_steps: int = Field(200_000, ge=0, description="steps over which beta grows to anneal_cap (0: cap at once)")
    anneal_cap: float = Field(0.2, ge=0.0)
    decay_half_life_days: float | None = Field(None, gt=0, description="time-decayed bag weights (None: multi-hot)")


def _mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with tanh between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


@register_model("multvae", MultVAEConfig)
class MultVAE(SequentialModel):
    causal = False  # a set model: the state sees the whole history at once

    def __init__(self, config: MultVAEConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        c = config
        dims = [sizes.n_items, *c.hidden_dims]
        self.encoder = _mlp([*dims, 2 * c.latent_dim])  # -> [mu, logvar]
        back = [c.latent_dim, *reversed(c.hidden_dims)]
        # Decoder = hidden part (tanh after every layer) + output layer, so that the output layer's
        # weight can serve as the item table of ``output_embeddings``.
        self.decoder_hidden = nn.Sequential(*[m for a, b in pairwise(back) for m in (nn.Linear(a, b), nn.Tanh())])
        self.decoder_out = nn.Linear(back[-1], sizes.n_items)
        self.drop = Dropout(c.dropout)
        # Training steps taken, for the beta annealing; a buffer so that resuming continues the schedule.
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))
        for m in self.modules():
            if isinstance(m, nn.Linear):  # the paper's init: Xavier weights, small normal biases
                nn.init.xavier_normal_(m.weight)
                nn.init.normal_(m.bias, std=0.001)

    # -- the bag ----------------------------------------------------------------------------------

    def bag(self, items: Tensor, timestamps: Tensor, valid: Tensor, query_ts: Tensor) -> Tensor:
        """(B, n_items) bag weights of events (B, E): max weight over each item's events, 0 for item 0."""
        w = valid.to(torch.float32)  # (B, E)
        hl = self.config.decay_half_life_days
        if hl is not None:
            age_days = (query_ts[:, None] - timestamps).clamp(min=0).to(torch.float32) / SECONDS_PER_DAY  # (B, E)
            w = w * torch.exp2(-age_days / hl)
        x = w.new_zeros(items.shape[0], self.n_items)  # (B, n_items)
        x = x.scatter_reduce(1, items, w, reduce="amax")  # the latest event of an item weighs the most
        x[:, 0] = 0.0  # unknown items carry no signal
        return x

    # -- encoder / decoder ------------------------------------------------------------------------

    def encode_bag(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar), each (B, latent_dim), of bags x (B, n_items)."""
        h = self.drop(F.normalize(x, dim=1))  # (B, n_items); an empty bag stays all zeros
        out = self.encoder(h)  # (B, 2 * latent)
        mu, logvar = out.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """(B, n_items) logits."""
        return self.decoder_out(self.decoder_hidden(z))

    def history_bag(self, batch: SequenceBatch) -> Tensor:
        return self.bag(batch.items, batch.timestamps, batch.mask, batch.query_ts)

    # -- the Recommender contract ------------------------------------------------------------------

    def encode(self, batch: SequenceBatch) -> Tensor:
        mu, _ = self.encode_bag(self.history_bag(batch))
        return mu  # (B, latent_dim)

    def forward(self, batch: SequenceBatch) -> Tensor:
        state = self.decoder_hidden(self.encode(batch))  # (B, D_dec)
        return state[:, None, :].expand(-1, batch.length, -1)  # (B, T, D_dec): the same set state at every t

    def output_embeddings(self) -> Tensor:
        return self.decoder_out.weight  # (n_items, D_dec)

    def output_bias(self) -> Tensor:
        return self.decoder_out.bias  # (n_items,)

    def score(self, batch: SequenceBatch) -> Tensor:
        logits = self.decode(self.encode(batch))  # (B, n_items), at mu: no sampling
        logits[:, 0] = NEG_INF
        return logits

    def beta(self) -> float:
        c = self.config
        if c.total_anneal_steps == 0:
            return c.anneal_cap
        return min(c.anneal_cap, int(self.anneal_step) / c.total_anneal_steps)

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Multinomial log-likelihood + beta * KL of the window's bag (``loss_fn`` is not used)."""
        # The window's events: the inputs and the targets (targets[t] is event t+1; the last one is
        # the window's final event, at query_ts), so the bag is the whole window.
        items = torch.cat([batch.items, batch.targets], dim=1)  # (B, 2T)
        target_ts = torch.cat([batch.timestamps[:, 1:], batch.query_ts[:, None]], dim=1)  # (B, T)
        ts = torch.cat([batch.timestamps, target_ts], dim=1)  # (B, 2T)
        valid = torch.cat([batch.mask, batch.targets > 0], dim=1)  # (B, 2T)
        x = self.bag(items, ts, valid, batch.query_ts)  # (B, n_items)

        mu, logvar = self.encode_bag(x)
        if self.training:
            std = torch.exp(0.5 * logvar)
            gen_device = generator.device if generator is not None else mu.device
            eps = torch.randn(mu.shape, generator=generator, device=gen_device, dtype=mu.dtype).to(mu.device)
            z = mu + eps * std  # reparameterisation
        else:
            z = mu
        logits = self.decode(z)  # (B, n_items)
        # Column 0 (padding) is never in a bag; leave it out of the softmax.
        nll = -(F.log_softmax(logits[:, 1:], dim=1) * x[:, 1:]).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        beta = self.beta()
        if self.training:
            self.anneal_step += 1
        return nll + beta * kl
