"""What every model is: built from its typed config plus sizes from the data; scores next items.

Two kinds share one contract (``Recommender``):

- ``SequentialModel``: neural, trained by ``evorec.training`` through ``training_loss``.
- count-based baselines (most-popular, ItemKNN, Markov): ``fit`` computes their buffers directly.

Both are ``torch.nn.Module``s whose learned state lives in parameters/buffers, so one checkpoint
format (state_dict + config + vocabularies) serves all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from evorec.errors import InputError
from evorec.types import BEHAVIORS, SequenceBatch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DataSizes:
    """Sizes a model takes from the data, never from its config. Vocabulary sizes count index 0."""

    n_items: int  # item vocabulary incl. padding 0
    n_categories: int  # category vocabulary incl. 0 = unknown
    n_behaviors: int = len(BEHAVIORS) + 1
    item_category: tuple[int, ...] | None = None  # category index of every item (len n_items), if known
    text_dim: int = 0  # width of the frozen item text vectors (0 = no item text); see set_item_text
    n_attributes: int = 0  # attribute token vocabulary incl. 0 = none (0 = no attributes); see set_item_attributes
    attribute_width: int = 0  # tokens per item in the attribute matrix (its columns)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["item_category"] = list(self.item_category) if self.item_category is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataSizes:
        ic = d.get("item_category")
        return cls(
            d["n_items"], d["n_categories"], d.get("n_behaviors", len(BEHAVIORS) + 1), tuple(ic) if ic else None, d.get("text_dim", 0),
            d.get("n_attributes", 0), d.get("attribute_width", 0),
        )


class ModelConfig(BaseModel):
    """Base of every model config: unknown keys are errors (a typo fails loudly)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AttentionConfig(ModelConfig):
    """Base of the attention models' configs, which declare ``hidden`` and ``heads``: the heads
    must divide the hidden width."""

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> AttentionConfig:
        if self.hidden % self.heads:
            raise InputError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


class SideInfoConfig(ModelConfig):
    """Optional inputs shared by the sequence models (all off = items and order only)."""

    use_category: bool = False  # add a category embedding to each event
    use_behavior: bool = False  # add a behaviour-type embedding (view/cart/fav/buy as tokens)
    time: Literal["none", "gap_buckets", "abs_buckets"] = "none"
    # gap_buckets: log-scaled bucket of the time since the previous event (and, for the query,
    # since the last event): long gaps are what long-term interest evolution is about.
    time_buckets: int = Field(32, ge=2, le=256)
    # text: add a learned projection of each item's frozen text vector (title | brand | category
    # path, embedded once by evorec.data.text) to the item's input and, where the model says so,
    # output vector. Needs DataSizes.text_dim > 0 and the matrix given through set_item_text.
    text: bool = False
    # attributes: add the mean of an item's attribute-token embeddings (category path nodes and
    # brand, evorec.data.attributes) to its input and, where the model says so, output vector.
    # Needs DataSizes.n_attributes > 0 and the matrix given through set_item_attributes.
    attributes: bool = False


class Recommender(nn.Module):
    """The shared contract. ``score`` is what evaluation and serving call."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    causal: ClassVar[bool] = True  # output at t depends only on events <= t
    trainable: ClassVar[bool] = True  # False: ``fit`` computes the state, no gradient training

    def __init__(self, config: ModelConfig, sizes: DataSizes):
        super().__init__()
        self.config = config
        self.sizes = sizes

    @property
    def n_items(self) -> int:
        return self.sizes.n_items

    def score(self, batch: SequenceBatch) -> Tensor:
        """(B, n_items) scores of every item as the next one; column 0 (padding) is -inf."""
        raise NotImplementedError

    def encode(self, batch: SequenceBatch) -> Tensor:
        """(B, D) user state after the last event of each history."""
        raise NotImplementedError

    def set_item_text(self, matrix) -> None:  # untyped: np.ndarray | Tensor
        """Give the model the frozen (n_items, text_dim) item text matrix (row 0 = padding).

        The matrix is data, not config: it is too big for ``DataSizes`` (which goes into every
        checkpoint as JSON-like lists), so the model keeps it as a *persistent buffer*. The
        pipeline calls this once after building the model; a checkpoint's ``state_dict`` carries
        the buffer, so ``load_model`` rebuilds the model (zeros) and ``load_state_dict`` restores
        the matrix from the file alone. Every submodule holding an ``item_text`` buffer (the shared
        ``EventEmbedding`` with ``side.text`` on) takes it; a model with none says so.
        """
        self._hand_to_submodules("item_text", matrix, "item text (is side.text on?)")

    def set_item_attributes(self, matrix) -> None:  # untyped: np.ndarray | Tensor
        """Give the model the (n_items, width) item attribute-token matrix (row 0 = padding, token
        0 = none; ``evorec.data.attributes.attribute_matrix``). Kept as a persistent buffer, as
        ``set_item_text`` explains; every submodule with an ``item_attributes`` buffer takes it."""
        self._hand_to_submodules("item_attributes", matrix, "item attributes (is side.attributes on?)")

    def _hand_to_submodules(self, buffer: str, matrix, what: str) -> None:
        """Call ``set_<buffer>(matrix)`` on every submodule holding that buffer; none is an error."""
        setter = f"set_{buffer}"
        takers = [
            m for m in self.modules()
            if m is not self and getattr(m, buffer, None) is not None and callable(getattr(m, setter, None))
        ]
        if not takers:
            raise InputError(f"{type(self).__name__} does not use {what}")
        for m in takers:
            getattr(m, setter)(matrix)

    def fit(self, train) -> None:  # untyped: evorec.data.batches.TrainView
        """Count-based models compute their state here; neural models are trained by the trainer."""
        raise NotImplementedError(f"{type(self).__name__} is trained by evorec.training, not fit()")

    def prepare(self, train) -> None:  # train: evorec.data.batches.TrainView
        """Called by the trainer once before gradient training, on the training data (default:
        nothing; an ensemble fits its count-based members here)."""


LossFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]
"""(hidden (N, D), targets (N,), item table (n_items, D), item bias (n_items,) | None) -> loss"""


class SequentialModel(Recommender):
    """A neural next-item model: ``forward`` gives a state per position, scored against items."""

    def forward(self, batch: SequenceBatch) -> Tensor:
        """(B, T, D) hidden state after each event (causal models: from events <= t only)."""
        raise NotImplementedError

    def output_embeddings(self) -> Tensor:
        """(n_items, D) item vectors that hidden states are scored against (usually tied)."""
        raise NotImplementedError

    def output_bias(self) -> Tensor | None:
        return None

    def query_state(self, batch: SequenceBatch, hidden: Tensor) -> Tensor:
        """(B, D) state used to score the next item; by default the last position's."""
        return hidden[:, -1]  # left-padded: T-1 is the latest event

    def encode(self, batch: SequenceBatch) -> Tensor:
        return self.query_state(batch, self(batch))

    def score(self, batch: SequenceBatch) -> Tensor:
        state = self.encode(batch)  # (B, D)
        logits = state @ self.output_embeddings().T  # (B, n_items)
        bias = self.output_bias()
        if bias is not None:
            logits = logits + bias
        logits[:, 0] = NEG_INF
        return logits

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn, generator: torch.Generator | None = None) -> Tensor:
        """Next-item loss over every position of every sequence in one pass."""
        hidden = self(batch)  # (B, T, D)
        sel = batch.targets > 0  # (B, T)
        return loss_fn(hidden[sel], batch.targets[sel], self.output_embeddings(), self.output_bias())
