"""Schema of the ``style_prompts`` table."""

import pandera.polars as pa


class StylePromptSchema(pa.DataFrameModel):
    """One style file at one version."""

    style: str
    version: str = pa.Field(str_matches=r"^[0-9a-f]{16}$", description="hash of the style file's content")
    path: str
    description: str
    answer_format: str = pa.Field(isin=["hash", "label"])
    instruction: str = pa.Field(str_length={"min_value": 1})
    paraphrase_instruction: str = pa.Field(description="instruction for H->style paraphrases; empty: the default")
    example: str = pa.Field(description="JSON {question, solution} worked example; empty: none")
    rubric: str = pa.Field(description="JSON list of {id, text} criteria for the judge")
    format_checks: str = pa.Field(description="JSON list of rule-based checks")

    class Config:
        strict = True
