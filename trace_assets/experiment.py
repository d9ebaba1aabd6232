"""An experiment is one YAML file; this module loads and validates it.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an error that
names the key, its place in the file and what was expected.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from trace_assets.errors import InputError, read_yaml
from trace_assets.settings import PROJECT_ROOT, resolve_path
from trace_assets.settings import Section as _Section

DEFAULT_EXPERIMENT = "experiments/smoke.yaml"
_PARTITION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# The dataset partitions of the untrained students: no examples, evaluated as they are, zero-shot and
# with the experiment's few-shot exemplars (k train problems, the same for every student).
BASE_DATASET = "base"
BASE_FEW_SHOT = "base_few_shot"
BASE_DATASETS = (BASE_DATASET, BASE_FEW_SHOT)
# In a planned contrast: the stronger of a student's two untrained baselines.
BASELINE = "baseline"


class ExperimentError(InputError):
    """The experiment file is missing, not YAML, or does not match the expected structure."""


class _ProblemsFields(_Section):
    tasks: list[str] = Field(
        ["gsm8k"],
        min_length=1,
        description="the registered tasks (trace_assets/tasks/registry.py) whose problems the study runs on",
    )
    n_train: int | None = Field(32, ge=1, description="train problems to sample per task; null keeps all")
    n_test: int | None = Field(16, ge=1, description="test problems to sample per task; null keeps all")


def _problems_model() -> type[_ProblemsFields]:
    """The ``problems:`` section with every registered task's settings as keys (``Task.settings``) and
    ``tasks`` limited to the registered names."""
    from trace_assets.tasks.registry import TASKS

    return _problems_model_of(tuple(TASKS))


@functools.cache
def _problems_model_of(names: tuple[str, ...]) -> type[_ProblemsFields]:
    from trace_assets.tasks.registry import TASKS

    fields: dict[str, Any] = {"tasks": (list[Literal[names]], _ProblemsFields.model_fields["tasks"])}  # type: ignore[valid-type]
    for name in names:
        fields |= TASKS[name].settings
    return create_model("ProblemsConfig", __base__=_ProblemsFields, **fields)


class ProblemsConfig(_ProblemsFields):
    """Which tasks, and how many problems of each; every other key is a task's setting (its
    ``settings``: trace_assets/tasks), validated by the task's types and its ``check_settings``. A
    task's settings are attributes (``problems.countdown``), defaults filled in."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...

    @model_validator(mode="wrap")
    @classmethod
    def _task_settings(cls, data: Any, handler: ModelWrapValidatorHandler[ProblemsConfig]) -> ProblemsConfig:
        if isinstance(data, ProblemsConfig):
            return handler(data)
        checked = _problems_model().model_validate(data)  # each key with its task's type and default
        problems = handler(dict(checked))
        if len(set(problems.tasks)) != len(problems.tasks):
            raise ValueError(f"tasks must be distinct (got {problems.tasks})")
        from trace_assets.tasks import get_task

        for name in problems.tasks:
            get_task(name).check_settings(problems)
        return problems


class SamplingConfig(_Section):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    n: int = Field(1, ge=1, description="samples per prompt")
    seed: int = 0


class ModelConfig(_Section):
    model: str = Field(min_length=1, description="HF id, local folder, or local:smollm2-135m-instruct")
    backend: Literal["vllm", "openai", "transformers"] = "vllm"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120, gt=0)
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans")
    data_parallel_size: int = Field(1, ge=1, description="independent vLLM engines, each on its own GPUs and share of prompts")
    dtype: str = Field("auto", description="auto: bfloat16 on GPUs, float32 on CPUs (2x faster there without bf16 units)")
    max_model_len: int = Field(2048, ge=128)
    sampling: SamplingConfig = SamplingConfig()

    @model_validator(mode="after")
    def _servable(self) -> ModelConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs a 'base_url' (e.g. http://localhost:8000/v1)")
        if self.sampling.max_tokens >= self.max_model_len:
            raise ValueError(
                f"sampling.max_tokens ({self.sampling.max_tokens}) leaves no room for the prompt within "
                f"max_model_len ({self.max_model_len}); lower it or raise max_model_len"
            )
        return self

    @property
    def gpus(self) -> int:
        """GPUs one step serving this model holds: every card of every engine."""
        return self.tensor_parallel_size * self.data_parallel_size


class StudentConfig(_Section):
    model: str = Field(min_length=1)
    dtype: str = "auto"


RecipeKind = Literal["G", "W", "H", "H_style", "mixture"]
TrimKind = Literal["none", "conclusion", "control"]
_RENAMED_RECIPE_KEYS = {
    "trim_after_answer": "use 'trim: conclusion' (and a second arm with 'trim: control' for its control)",
    "match_tokens_with": "list the datasets to equalise under the experiment's 'token_matching' key",
}


class DatasetRecipe(_Section):
    """One training dataset (an arm). Which trace of a problem it takes never depends on its name:
    every arm that needs "a trace of style S for problem P" takes the same one (see
    trace_assets/datasets/recipes.py), after the experiment's one ``eligibility`` policy.

    - ``G``: traces whose declared final answer is right; ``W``: whose declared answer is wrong.
    - ``H``: the human reference solutions; ``H_style``: the teacher's paraphrases of them into
      ``style`` that keep the answer and follow the human solution.
    - ``mixture``: ``G`` with ``flawed_fraction`` of its problems given a flawed trace (``flaw``);
      mixtures of one style and flaw are nested (the flawed set at 0.1 is inside the one at 0.25).
      ``flaw: complete`` with ``flaw_level`` below 1 is a rung of the degradation ladder (a share of
      each flawed trace's steps corrupted; rungs nest too).

    ``exclude_arithmetic_slips`` is the one eligibility rule an arm may set for itself (a checked G beside
    G in one study); an arm that sets it takes, per problem, the best-ranked trace that also passes it.
    """

    recipe: RecipeKind
    style: str | None = None
    flawed_fraction: float = Field(0.0, ge=0, le=1, description="mixture only: share of problems with a flawed trace")
    flaw: Literal["wrong", "corrupted", "complete", "both"] = Field(
        "wrong",
        description="mixture only. wrong: the style's wrong-answer trace for the problem; corrupted: the G trace with "
        "the calculation that first yields its answer, and the answer, changed to a wrong value; complete: the G trace "
        "with every calculation step corrupted (an operand, the operator and the result) and a wrong answer, for tasks "
        "with numeric answers (others' problems are excluded as no_flawed_version); both: wrong where there is one, else corrupted",
    )
    flaw_level: float = Field(
        1.0,
        gt=0,
        le=1,
        description="flaw 'complete' only: the share of a trace's calculation steps corrupted (rounded up; the step "
        "yielding the answer first, so the answer is wrong at every level); 1.0: every step (completely flawed)",
    )
    trim: TrimKind = Field(
        "none",
        description="conclusion: cut what follows the first statement of the final answer, keep one answer line; "
        "control: remove as many tokens from a seeded random span of the reasoning before that point",
    )
    per_problem: int = Field(1, ge=1, description="traces taken per problem, best-ranked first")
    keep_by: Literal["all", "step_confidence", "mean_logprob"] = Field(
        "all",
        description="step_confidence: keep the keep_fraction of problems whose trace's least confident step is most "
        "confident (each problem's most confident eligible sample); mean_logprob: the same by the trace's mean token "
        "log-probability, the control. Traces without recorded log-probabilities are excluded",
    )
    keep_fraction: float = Field(1.0, gt=0, le=1, description="keep_by: the share of the arm's problems kept")
    pair_correct_wrong: bool = Field(
        False, description="G/W/mixture: only problems where the style has both an eligible right and an eligible wrong trace"
    )
    per_task: bool | None = Field(
        None,
        description="true: one model per task, each trained on this dataset's examples of that task alone and "
        "evaluated on that task's test problems; false: one model on every task's examples (pooled); null: as "
        "training.per_task says",
    )
    exclude_arithmetic_slips: bool | None = Field(
        None,
        description="true: drop teacher traces with a calculation whose stated result is wrong "
        "(reporting/failures.arithmetic_slips), recorded as arithmetic_slip; false: keep them; null: as "
        "eligibility.exclude_arithmetic_slips says. Lets a checked arm sit beside its unchecked twin in one study",
    )
    replicate_of: str | None = Field(
        None,
        description="an A/A control: the same examples as this dataset, trained again with other training seeds "
        "(each seed plus REPLICATE_SEED_OFFSET); written in the file as `NAME: {replicate_of: DATASET}` alone",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data):
        if isinstance(data, dict):
            for key, hint in _RENAMED_RECIPE_KEYS.items():
                if key in data:
                    raise ValueError(f"'{key}' is no longer a recipe key: {hint}")
        return data

    @model_validator(mode="after")
    def _style_needed(self) -> DatasetRecipe:
        if self.recipe != "H" and self.style is None:
            raise ValueError(f"recipe '{self.recipe}' needs a 'style'")
        if self.recipe == "H" and self.style is not None:
            raise ValueError("recipe 'H' (the human solutions) takes no 'style'; use recipe 'H_style' for paraphrases")
        if self.recipe != "mixture" and (self.flawed_fraction != 0 or "flaw" in self.model_fields_set):
            raise ValueError(f"'flawed_fraction' and 'flaw' apply to recipe 'mixture', not '{self.recipe}'")
        if "flaw_level" in self.model_fields_set and (self.recipe != "mixture" or self.flaw != "complete"):
            raise ValueError(f"'flaw_level' (the share of steps corrupted) applies to flaw 'complete', not '{self.flaw}'")
        if self.recipe == "mixture" and (self.per_problem != 1 or self.trim != "none"):
            raise ValueError("a mixture takes one trace per problem and is not trimmed (per_problem: 1, trim: none)")
        if self.recipe == "H" and self.trim != "none":
            raise ValueError("'trim' applies to teacher traces, not to recipe 'H'")
        if self.recipe == "H" and self.exclude_arithmetic_slips is not None:
            raise ValueError("'exclude_arithmetic_slips' checks teacher traces, not recipe 'H' (the human solutions)")
        if self.pair_correct_wrong and self.recipe not in ("G", "W", "mixture"):
            raise ValueError("'pair_correct_wrong' applies to recipes G, W and mixture")
        if self.keep_by != "all" and self.recipe not in ("G", "W", "H_style"):
            raise ValueError("'keep_by' ranks teacher traces: it applies to recipes G, W and H_style")
        if (self.keep_by == "all") != (self.keep_fraction == 1.0):
            raise ValueError("'keep_by' and 'keep_fraction' go together: a fraction below 1 of the traces ranked by one score")
        return self

    def excludes_arithmetic_slips(self, policy: EligibilityPolicy) -> bool:
        """Whether this arm drops teacher traces with an arithmetic slip: its own setting, else the policy's."""
        if self.exclude_arithmetic_slips is None:
            return policy.exclude_arithmetic_slips
        return self.exclude_arithmetic_slips


class EligibilityPolicy(_Section):
    """Which teacher traces (solves and paraphrases) any synthetic arm may use; the same for every arm
    (``exclude_arithmetic_slips`` only as the default of the datasets' own setting).
    A trace that fails is recorded in ``dataset_exclusions`` with the first failing reason."""

    exclude_truncated: bool = Field(True, description="drop traces cut off at max_tokens (finish reason 'length')")
    require_declared_answer: bool = Field(
        True,
        description="the final answer must be declared in the style's own format (#### or ANSWER:), never only "
        "found by the fallback extractor",
    )
    exclude_changed_answer: bool = Field(True, description="drop traces that declare one answer and later another")
    require_judge_verdict: bool = Field(True, description="drop traces whose judge reply was not a parseable verdict")
    require_conformance: bool = Field(True, description="drop traces that fail the style's rules or judge")
    exclude_arithmetic_slips: bool = Field(
        False,
        description="drop teacher traces with a calculation whose stated result is wrong (reporting/failures."
        "arithmetic_slips: '8 - 5 = 1'), so a right answer reached by wrong steps is not kept; checked after the "
        "arm's own tests and recorded as arithmetic_slip. The default of every arm; a dataset's own "
        "exclude_arithmetic_slips overrides it",
    )
    paraphrase_min_coverage: float = Field(
        1.0,
        ge=0,
        le=1,
        description="H_style: share of the human solution's intermediate quantities the paraphrase must contain",
    )
    paraphrase_judge: bool = Field(
        True,
        description="H_style: also require the judge's verdict that the paraphrase follows the human solution's "
        "steps (judged_traces.judge_faithful)",
    )


class ComparisonsConfig(_Section):
    """Which arms share one problem set: in each group, every arm keeps only the problems where all
    of the group's non-empty arms have an eligible trace (the problems an arm loses are counted)."""

    intersect_problems: bool = Field(True, description="false: every arm keeps every problem it has a trace for")
    groups: list[list[str]] | None = Field(
        None, description="groups of dataset names compared together; null: all datasets form one group"
    )


class TokenMatchGroup(_Section):
    """Datasets whose training tokens are made equal, per student under its own tokenizer, by
    subsampling every larger one to the smallest (aligned on the same problems where possible)."""

    datasets: list[str] = Field(min_length=2)
    tolerance: float = Field(0.01, ge=0, lt=1, description="largest allowed relative gap to the smallest total")


class EarlyStopConfig(_Section):
    """Sample a problem one sample at a time (up to the teacher's ``n``) and stop once it has enough
    confident traces. Each wave is one generation call (one engine start with vLLM)."""

    confident_traces: int = Field(1, ge=1, description="stop sampling a problem once this many of its traces are confident")
    min_step_confidence: float = Field(le=0, description="confident: step-level confidence (a log-probability) at least this")


class ConfidenceConfig(_Section):
    """Step-level confidence of teacher traces (trace_assets/traces/confidence.py)."""

    window: int = Field(8, ge=1, description="tokens of the sliding window inside a step")
    early_stop: EarlyStopConfig | None = None


class RevisionConfig(_Section):
    """The closed loop (trace_assets/loop/): each round a reviser model rewrites a style from the students'
    failures on a validation split carved from the train problems; the round's traces, datasets,
    checkpoints and evaluations follow, until ``rounds`` or the stop rule."""

    styles: list[str] = Field(min_length=1, description="styles to revise, each its own chain of rounds")
    rounds: int = Field(2, ge=1, le=50, description="revision rounds after round 0 (the style file as written)")
    validation_fraction: float = Field(
        0.25, gt=0, lt=1, description="share of the train problems set aside (seeded) as the validation split"
    )
    reviser: ModelConfig | None = Field(None, description="the model that revises styles; null: the teacher")
    examples_per_category: int = Field(2, ge=1, le=20, description="failure examples the reviser sees per category")
    max_attempts: int = Field(
        2,
        ge=1,
        le=10,
        description="reviser replies (a sampling seed each, all sampled in one call) read before a round keeps its parent's text",
    )
    stop_after: int = Field(
        1, ge=1, description="stop a chain after this many rounds in a row without a distinguishable gain on validation"
    )
    gpu_hours: float | None = Field(None, gt=0, description="stop before a round that would pass this dry-run estimate")


class TrainingConfig(_Section):
    seeds: list[int] = Field([0], min_length=1, description="one checkpoint per dataset, student and seed")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1: run the full epochs")
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=16)
    packing: bool = Field(
        False,
        description="pack examples into rows of max_length tokens (best-fit decreasing), padding-free: "
        "position ids restart at each example and attention never crosses examples",
    )
    attention: Literal["auto", "sdpa", "flex_attention", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: flex_attention (document masks) for packed training on a GPU, else sdpa"
    )
    compile: bool = Field(
        True, description="torch.compile the student on a GPU (ignored on CPU, where it costs more than it saves)"
    )
    fused_lm_head: bool = Field(
        True,
        description="the loss from TRL's fused LM head: only the completion positions projected, in tiles, so the float32 "
        "(tokens x vocabulary) logits are never materialised (memory for large vocabularies); false: the model's own "
        "loss over the full logits. Its GPU speed is not yet measured: the fifth GPU run's 135M SFT, the first with it, "
        "took 19-21 s a run where the fourth took 12-14 s on another H100 for the same examples. Not part of a checkpoint's key: "
        "the same loss either way",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute activations in the backward pass: less memory for about a third more compute "
        "(TRL's SFTConfig turns it on by default; bench/gpu.py sft measured 0.8 of the bare loop's tokens/s with it)",
    )
    logging_steps: int | None = Field(
        None,
        ge=1,
        description="log the loss every N optimizer steps; null: every step on CPU, every 10 on a GPU, where "
        "each logged step waits for the GPU and so keeps the host from queueing the next step",
    )
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    curriculum: bool = False
    processes: int = Field(1, ge=1, description="data-parallel SFT processes (one GPU each), launched with torchrun")
    per_task: bool = Field(
        False,
        description="train every dataset per task: one model per task on that task's examples alone, evaluated on "
        "that task's test problems only (a dataset's own per_task overrides this); false: one model on all tasks pooled",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct (got {seeds})")
        return seeds

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, steps: int) -> int:
        if steps == 0:
            raise ValueError("max_steps 0 would train nothing; use -1 for the full epochs or a positive number")
        return steps

    @model_validator(mode="after")
    def _curriculum_needs_order(self) -> TrainingConfig:
        if self.curriculum and self.packing:
            raise ValueError(
                "curriculum: true with packing: true would lose the easy-to-hard order (TRL packs with best-fit "
                "decreasing, which regroups examples by length); set one of them to false"
            )
        return self


class EvaluationConfig(_Section):
    prompt_format: Literal["zero_shot", "few_shot"] = Field(
        "zero_shot", description="how trained checkpoints are prompted; the untrained students are evaluated both ways"
    )
    few_shot_k: int = Field(4, ge=0, description="train-split exemplars of the few-shot prompts; 0: no few-shot baseline")
    max_tokens: int = Field(256, ge=1)
    schedule: str | None = Field(None, description="cron string; null disables the schedule")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is not None:
            from dagster._utils.schedules import is_valid_cron_string

            if not is_valid_cron_string(schedule):
                raise ValueError(f"'{schedule}' is not a cron string of 5 fields (e.g. '0 3 * * *' for 03:00 daily)")
        return schedule


class ThresholdsConfig(_Section):
    min_conformance_rate: float = Field(0.5, ge=0, le=1)
    min_correct_rate: float = Field(0.3, ge=0, le=1)


class GpuConfig(_Section):
    devices: list[int] = Field([], description="CUDA device ids the steps may use; [] = every visible card")
    memory_fraction: float = Field(0.85, gt=0, le=1)
    cpu_memory_fraction: float = Field(0.3, gt=0, le=1)
    sleep_engines: bool = Field(
        False,
        description="between the steps of one process (the study's stages run in process), put vLLM engines to "
        "sleep rather than stop them, so that a model's engine starts once (vLLM's sleep mode; CUDA only)",
    )

    @field_validator("devices")
    @classmethod
    def _device_ids(cls, devices: list[int]) -> list[int]:
        if any(device < 0 for device in devices) or len(set(devices)) != len(devices):
            raise ValueError(f"devices are distinct CUDA ids >= 0 (got {devices})")
        return devices


class DatasetRules(_Section):
    """The rules every dataset recipe is built under: who is eligible, which arms share problems,
    which are matched on training tokens."""

    eligibility: EligibilityPolicy
    comparisons: ComparisonsConfig
    token_matching: list[TokenMatchGroup]


# A replicate (A/A control) trains with each seed plus this offset (times its number among the replicates
# of one dataset), so its runs are really other training runs of the same examples.
REPLICATE_SEED_OFFSET = 1000


class StatisticsConfig(_Section):
    """What the report's statistics and power planning may assume (trace_assets/reporting/stats.py)."""

    seed_sd: float | None = Field(
        None,
        gt=0,
        le=5,
        description="training noise, the logit SD of one run's shift from seed to seed (0.15 is about 3-4 accuracy "
        "points near 50%): used for single-seed arms when no run of the student has two seeds, and in power planning",
    )
    target_difference: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="the accuracy difference the study should detect (0.03: 3 points); dry-run prints the seeds it needs",
    )


class InteractionContrast(_Section):
    """``(a - b) at student S1 vs (a - b) at student S2``: does a data change act differently on two students?"""

    difference: tuple[str, str] = Field(description="[a, b]: the datasets whose difference a - b is compared")
    between: tuple[str, str] = Field(description="[S1, S2]: the two students it is compared between")


def _contrast_entry(number: int, entry):
    """A ``contrasts:`` entry: ``[a, b]`` or ``{difference: [a, b], between: [S1, S2]}``."""
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(x, str) for x in entry):
        return tuple(entry)
    if isinstance(entry, InteractionContrast):
        return entry
    if isinstance(entry, dict) and set(entry) == {"difference", "between"}:
        try:
            return InteractionContrast.model_validate(entry)
        except ValidationError as error:
            raise ValueError(f"contrasts.{number}: {error.errors()[0]['msg']} in {entry!r}") from None
    raise ValueError(
        f"contrasts.{number}: expected [a, b] or {{difference: [a, b], between: [student1, student2]}}, got {entry!r}"
    )


class Experiment(_Section):
    name: str = Field(min_length=1)
    seed: int = 0
    problems: ProblemsConfig = ProblemsConfig()
    styles_dir: str = "styles"
    styles: list[str]
    teacher: ModelConfig
    judge: ModelConfig
    students: dict[str, StudentConfig] = Field(min_length=1)
    datasets: dict[str, DatasetRecipe]
    eligibility: EligibilityPolicy = EligibilityPolicy()
    comparisons: ComparisonsConfig = ComparisonsConfig()
    token_matching: list[TokenMatchGroup] = Field(default_factory=list)
    contrasts: list[tuple[str, str] | InteractionContrast] | None = Field(
        None,
        description="planned comparisons [a, b]: is a different from b? Names are datasets, 'base', "
        "'base_few_shot' or 'baseline' (tested against each untrained evaluation). Or interactions "
        "{difference: [a, b], between: [S1, S2]}: is a - b different at student S1 and at S2? Null: the first "
        "dataset vs baseline, then every other dataset vs the first",
    )
    statistics: StatisticsConfig = StatisticsConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    gpu: GpuConfig = GpuConfig()
    confidence: ConfidenceConfig = ConfidenceConfig()
    revision: RevisionConfig | None = None

    # Where the file was loaded from; relative paths inside it resolve against the project root.
    source_path: str = ""

    @field_validator("contrasts", mode="before")
    @classmethod
    def _contrast_entries(cls, entries):
        if isinstance(entries, list):
            return [_contrast_entry(number, entry) for number, entry in enumerate(entries)]
        return entries

    @model_validator(mode="before")
    @classmethod
    def _expand_replicates(cls, data):
        """``NAME: {replicate_of: DATASET}`` takes DATASET's recipe, with ``replicate_of`` set."""
        datasets = data.get("datasets") if isinstance(data, dict) else None
        if not isinstance(datasets, dict):
            return data
        expanded = dict(datasets)
        for name, entry in datasets.items():
            source = entry.get("replicate_of") if isinstance(entry, dict) else None
            if source is None:
                continue
            if set(entry) != {"replicate_of"}:
                raise ValueError(f"datasets.{name}: a replicate takes its recipe from '{source}'; give only 'replicate_of'")
            original = datasets.get(source)
            if original is None:
                raise ValueError(f"datasets.{name}.replicate_of: '{source}' is not a dataset of this experiment")
            original = original.model_dump() if isinstance(original, BaseModel) else original
            if not isinstance(original, dict) or original.get("replicate_of"):
                raise ValueError(f"datasets.{name}.replicate_of: '{source}' is itself a replicate; name the original")
            expanded[name] = {**original, "replicate_of": source}
        return {**data, "datasets": expanded}

    @field_validator("styles")
    @classmethod
    def _style_names(cls, styles: list[str]) -> list[str]:
        for name in styles:
            if not _PARTITION_NAME.match(name):
                raise ValueError(f"style name '{name}' must match {_PARTITION_NAME.pattern}")
        if len(set(styles)) != len(styles):
            raise ValueError("style names must be unique")
        return styles

    @field_validator("datasets")
    @classmethod
    def _base_is_reserved(cls, entries: dict) -> dict:
        for reserved in BASE_DATASETS:
            if reserved in entries:
                raise ValueError(f"'{reserved}' is reserved for the untrained students; name the dataset differently")
        return entries

    @field_validator("datasets", "students")
    @classmethod
    def _partition_names(cls, entries: dict) -> dict:
        for name in entries:
            if not _PARTITION_NAME.match(name):
                raise ValueError(f"name '{name}' must match {_PARTITION_NAME.pattern} (it becomes a partition key)")
        return entries

    @model_validator(mode="after")
    def _finishable(self) -> Experiment:
        """Sizes the experiment could never run with."""
        k, n_train = self.evaluation.few_shot_k, self.problems.n_train
        if n_train is not None and k > n_train:
            raise ValueError(
                f"evaluation.few_shot_k ({k}) is more than problems.n_train ({n_train}): "
                "the few-shot prompts take k distinct train problems"
            )
        if self.gpu.devices:
            needs = {"teacher": self.teacher.gpus, "judge": self.judge.gpus, "training.processes": self.training.processes}
            for what, count in needs.items():
                if count > len(self.gpu.devices):
                    raise ValueError(
                        f"{what} needs {count} GPUs but gpu.devices lists {len(self.gpu.devices)} "
                        f"({self.gpu.devices}); its steps would wait for cards forever"
                    )
        return self

    @model_validator(mode="after")
    def _flaws_apply(self) -> Experiment:
        """A 'complete' mixture corrupts numeric calculations: some task of the study must have numeric answers
        (the problems of the others are excluded from it, counted as no_flawed_version)."""
        from trace_assets.tasks import get_task

        complete = [name for name, recipe in self.datasets.items() if recipe.recipe == "mixture" and recipe.flaw == "complete"]
        if complete and not any(get_task(task).numeric_answers for task in self.problems.tasks):
            raise ValueError(
                f"datasets.{complete[0]}: flaw 'complete' corrupts numeric calculation steps, and none of the tasks "
                f"{self.problems.tasks} has numeric answers; use flaw 'wrong'"
            )
        return self

    @model_validator(mode="after")
    def _references(self) -> Experiment:
        for name, recipe in self.datasets.items():
            if recipe.style is not None and recipe.style not in self.styles:
                raise ValueError(f"datasets.{name}.style: '{recipe.style}' is not one of styles {self.styles}")
        known = {*self.datasets, *BASE_DATASETS, BASELINE}
        for number, entry in enumerate(self.contrasts or []):
            if isinstance(entry, InteractionContrast):
                for student in entry.between:
                    if student not in self.students:
                        raise ValueError(f"contrasts.{number}.between: '{student}' is not a student of this experiment")
                if entry.between[0] == entry.between[1]:
                    raise ValueError(f"contrasts.{number}.between: compares student '{entry.between[0]}' with itself")
                a, b = entry.difference
                if BASELINE in entry.difference:
                    raise ValueError(
                        f"contrasts.{number}.difference: name the untrained arm ('{BASE_DATASET}' or '{BASE_FEW_SHOT}')"
                    )
            else:
                a, b = entry
            for arm in (a, b):
                if arm not in known:
                    raise ValueError(
                        f"contrasts.{number}: '{arm}' is not a dataset of this experiment, "
                        f"'{BASE_DATASET}', '{BASE_FEW_SHOT}' or '{BASELINE}'"
                    )
            if a == b:
                raise ValueError(f"contrasts.{number}: compares '{a}' with itself")
        return self

    @model_validator(mode="after")
    def _revised_styles(self) -> Experiment:
        if self.revision is not None:
            for style in self.revision.styles:
                if style not in self.styles:
                    raise ValueError(f"revision.styles: '{style}' is not one of styles {self.styles}")
                if not self.datasets_using_style(style):
                    raise ValueError(f"revision.styles: no dataset uses style '{style}', so a round would train nothing")
        return self

    @model_validator(mode="after")
    def _dataset_groups(self) -> Experiment:
        """comparisons.groups and token_matching name datasets of this experiment, each at most once."""

        def check(section: str, groups: list[list[str]]) -> None:
            seen: dict[str, int] = {}
            for number, group in enumerate(groups):
                for name in group:
                    if name not in self.datasets:
                        raise ValueError(f"{section}[{number}]: '{name}' is not a dataset of this experiment")
                    if name in seen:
                        raise ValueError(f"{section}: '{name}' is in groups {seen[name]} and {number}; a dataset joins one group")
                    seen[name] = number

        groups = self.comparisons.groups
        replicates = {name for name, recipe in self.datasets.items() if recipe.replicate_of}
        for section, named in (
            ("comparisons.groups", groups or []),
            ("token_matching", [g.datasets for g in self.token_matching]),
        ):
            for index, members in enumerate(named):
                listed = sorted(replicates & set(members))
                if listed:
                    raise ValueError(f"{section}[{index}]: '{listed[0]}' is a replicate; it takes its examples from its original")
        check("comparisons.groups", groups or [])
        check("token_matching", [group.datasets for group in self.token_matching])
        for group in self.token_matching:
            mixtures = [name for name in group.datasets if self.datasets[name].recipe == "mixture"]
            if mixtures:
                raise ValueError(f"token_matching: {mixtures} are mixtures; subsampling would change their flawed fraction")
        if self.comparisons.intersect_problems:
            # Mixtures of one style and flaw are nested only if they are built over the same problems.
            where: dict[tuple, set[int | None]] = {}
            for name, recipe in self.datasets.items():
                if recipe.recipe == "mixture" and not recipe.replicate_of:
                    number = next((i for i, group in enumerate(groups) if name in group), None) if groups is not None else 0
                    key = (
                        recipe.style,
                        recipe.flaw,
                        recipe.pair_correct_wrong,
                        recipe.excludes_arithmetic_slips(self.eligibility),
                    )
                    where.setdefault(key, set()).add(number)
            for (style, flaw, _, _), numbers in where.items():
                if len(numbers) > 1:
                    raise ValueError(
                        f"comparisons.groups: the '{style}' mixtures with flaw '{flaw}' must all be in one group, "
                        "or they are built over different problems and do not nest"
                    )
        return self

    def resolve(self, path: str) -> Path:
        return resolve_path(path)

    def datasets_using_style(self, style: str) -> list[str]:
        return [name for name, recipe in self.datasets.items() if recipe.style == style]

    def paraphrase_styles(self) -> frozenset[str]:
        """Styles the teacher must also paraphrase the human solutions into (for ``H_style`` recipes)."""
        # (DatasetRecipe's validator requires a style for every recipe but H; the check only narrows the type)
        return frozenset(
            recipe.style for recipe in self.datasets.values() if recipe.recipe == "H_style" and recipe.style is not None
        )

    def self_graded(self) -> bool:
        """The judge is the teacher model grading its own traces."""
        return self.judge.model == self.teacher.model

    def judge_note(self) -> str:
        if self.self_graded():
            return (
                f"SELF-GRADED: the judge ({self.judge.model}) is the teacher grading its own traces; "
                "conformance verdicts may be lenient. Name another `judge` model to avoid this."
            )
        return f"independent judge {self.judge.model} (teacher {self.teacher.model})"

    def planned_contrasts(self) -> list[tuple[str, str]]:
        """The pairwise comparisons the report tests (with the interactions, one Holm family): declared, or
        the default (replicates left out: they are A/A controls, ``replicate_pairs``)."""
        if self.contrasts is not None:
            return [entry for entry in self.contrasts if isinstance(entry, tuple)]
        trained = [name for name, recipe in self.datasets.items() if not recipe.replicate_of]
        return [(trained[0], BASELINE)] + [(other, trained[0]) for other in trained[1:]] if trained else []

    def interactions(self) -> list[tuple[str, str, str, str]]:
        """Declared interactions as (a, b, student 1, student 2): (a - b) at student 1 vs at student 2."""
        return [(*entry.difference, *entry.between) for entry in self.contrasts or [] if isinstance(entry, InteractionContrast)]

    def replicate_pairs(self) -> list[tuple[str, str]]:
        """The A/A controls: (replicate, its original)."""
        return [(name, recipe.replicate_of) for name, recipe in self.datasets.items() if recipe.replicate_of]

    def training_seed_offsets(self) -> dict[str, int]:
        """Per replicate, what its training seeds add to the experiment's seeds (its runs must differ)."""
        offsets: dict[str, int] = {}
        count: dict[str, int] = {}
        for name, source in self.replicate_pairs():
            count[source] = count.get(source, 0) + 1
            offsets[name] = REPLICATE_SEED_OFFSET * count[source]
        return offsets

    def per_task_datasets(self) -> frozenset[str]:
        """Datasets trained per task (one model per task): their own ``per_task``, else ``training.per_task``."""
        default = self.training.per_task
        return frozenset(
            name for name, recipe in self.datasets.items() if (default if recipe.per_task is None else recipe.per_task)
        )

    def reviser(self) -> ModelConfig:
        """The model that revises styles: ``revision.reviser``, else the teacher."""
        return (self.revision.reviser if self.revision else None) or self.teacher

    def validation_fraction(self) -> float:
        """Share of the train problems carved out as validation: only when the loop runs."""
        return self.revision.validation_fraction if self.revision else 0.0

    def confidence_pairs(self) -> list[tuple[str, str]]:
        """(step-confidence arm, its control): recipes alike but for ``keep_by``, the control ranking by the mean."""
        pairs = []
        for name, recipe in self.datasets.items():
            if recipe.keep_by == "step_confidence":
                twin = recipe.model_copy(update={"keep_by": "mean_logprob"})
                pairs += [(name, other) for other, candidate in self.datasets.items() if candidate == twin][:1]
        return pairs

    def dataset_rules(self) -> DatasetRules:
        return DatasetRules(eligibility=self.eligibility, comparisons=self.comparisons, token_matching=self.token_matching)

    def dataset_keys(self) -> list[str]:
        """Dataset partitions: every recipe, plus the untrained students: ``base`` (zero-shot) and, when the
        experiment has few-shot exemplars, ``base_few_shot``."""
        bases = list(BASE_DATASETS) if self.evaluation.few_shot_k > 0 else [BASE_DATASET]
        return [*bases, *self.datasets]


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid experiment file"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (not part of the experiment format; check its spelling)")
        elif item["type"] == "missing":
            lines.append(f"  - missing required key '{key}'")
        else:
            got = item.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {_short(got)})"
            lines.append(f"  - key '{key}': {item['msg']}{got_text}")
    return "\n".join(lines)


def load_experiment(path: str | os.PathLike | None = None) -> Experiment:
    """Load and validate an experiment; default from ``TRACE_ASSETS_EXPERIMENT`` or experiments/smoke.yaml.

    This checks the file itself; :func:`trace_assets.inputs.check_inputs` also reads the files it names."""
    raw_path = Path(path or os.environ.get("TRACE_ASSETS_EXPERIMENT") or DEFAULT_EXPERIMENT)
    file_path = raw_path if raw_path.is_absolute() else (Path.cwd() / raw_path)
    if not file_path.exists() and not raw_path.is_absolute():
        file_path = PROJECT_ROOT / raw_path
    if not file_path.exists():
        raise ExperimentError(f"{raw_path}: experiment file not found")
    if file_path.is_dir():
        raise ExperimentError(f"{file_path}: is a folder; expected an experiment YAML file")
    data = read_yaml(file_path, ExperimentError, "experiment file")
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else f"a YAML {type(data).__name__}"
        raise ExperimentError(f"{file_path}: expected a mapping of experiment settings at the top level, got {kind}")
    data.setdefault("source_path", str(file_path))
    try:
        return Experiment.model_validate(data)
    except ValidationError as error:
        raise ExperimentError(_format_validation_error(file_path, error)) from None


def data_dir() -> Path:
    """The run-output folder: ``TRACE_ASSETS_DATA_DIR`` or ``data/`` in the project."""
    configured = os.environ.get("TRACE_ASSETS_DATA_DIR")
    return Path(configured).resolve() if configured else PROJECT_ROOT / "data"


def database_path(folder: Path | None = None) -> Path:
    return (folder or data_dir()) / "trace_assets.duckdb"
