"""Schemas of the ``checkpoints`` and ``training_log`` tables."""

import pandera.polars as pa


class CheckpointSchema(pa.DataFrameModel):
    """One student fine-tuned (or not: ``base``, ``skipped_empty``) on one dataset with one seed."""

    dataset: str
    student: str
    seed: int
    status: str = pa.Field(isin=["trained", "base", "skipped_empty"])
    path: str = pa.Field(nullable=True, description="saved model folder under the data folder")
    content_hash: str = pa.Field(nullable=True, description="hash of the saved weights and configs")
    base_model: str
    config: str = pa.Field(description="JSON of the training settings")
    train_examples: int = pa.Field(ge=0)
    eval_examples: int = pa.Field(ge=0)
    train_tokens: int = pa.Field(ge=0)
    wall_s: float = pa.Field(ge=0)
    task: str = pa.Field(
        nullable=True,
        description="per-task training: the task whose examples alone it learnt (and whose test problems it answers); "
        "null: pooled over every task, or untrained",
    )

    class Config:
        strict = True


class TrainingLogSchema(pa.DataFrameModel):
    """One logged training or evaluation step."""

    dataset: str
    student: str
    seed: int
    step: int = pa.Field(ge=0)
    train_loss: float = pa.Field(nullable=True)
    eval_loss: float = pa.Field(nullable=True)
    learning_rate: float = pa.Field(nullable=True)
    tokens_seen: int = pa.Field(nullable=True)
    task: str = pa.Field(nullable=True, description="the run's task (checkpoints.task); null for a pooled run")

    class Config:
        strict = True
