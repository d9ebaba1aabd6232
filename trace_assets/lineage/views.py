"""SQL views that answer lineage questions with one query each."""

LINEAGE_VIEWS = {
    # Which style file version, teacher, judge verdict and problem produced a training example.
    "example_lineage": """
        SELECT e.dataset, e.example_id, e.problem_id, p.question, e.source, e.flaw, e.trace_id,
               e.style, e.style_version, s.path AS style_path, (s.version = e.style_version) AS style_is_current,
               t.model AS teacher_model, t.sampling AS teacher_sampling, t.prompt_hash,
               j.conforms, j.verdict_source, j.rules_failed, j.judge_failed, j.judge_reason, j.judge_model
        FROM sft_examples e
        LEFT JOIN teacher_traces t USING (trace_id)
        LEFT JOIN judged_traces j USING (trace_id)
        LEFT JOIN style_prompts s ON s.style = e.style
        LEFT JOIN problems p ON p.problem_id = e.problem_id AND p.split = 'train'
    """,
    # Which dataset and checkpoint produced an eval row.
    "eval_lineage": """
        SELECT r.dataset, r.student, r.seed, r.problem_id, r.is_correct, r.extracted_answer, r.training,
               c.task AS checkpoint_task, c.status AS checkpoint_status, c.path AS checkpoint_path, c.content_hash AS checkpoint_hash,
               c.base_model, c.config AS training_config, c.train_examples, c.train_tokens
        FROM eval_results r
        JOIN checkpoints c ON c.content_hash = r.checkpoint_hash AND c.dataset = r.dataset
             AND c.student = r.student AND c.seed = r.seed
    """,
    # Every row downstream of a style version: traces, verdicts, examples, and the checkpoints and
    # eval rows of datasets that contain examples of that version.
    "style_version_rows": """
        WITH dataset_versions AS (
            SELECT DISTINCT dataset, style_version FROM sft_examples WHERE style_version IS NOT NULL
        )
        SELECT 'teacher_traces' AS table_name, trace_id AS row_id, style, style_version FROM teacher_traces
        UNION ALL SELECT 'judged_traces', trace_id, style, style_version FROM judged_traces
        UNION ALL SELECT 'sft_examples', example_id, style, style_version FROM sft_examples WHERE style_version IS NOT NULL
        UNION ALL SELECT 'checkpoints', c.dataset || '|' || c.student || '|' || c.seed || coalesce('|' || c.task, ''), NULL, d.style_version
            FROM checkpoints c JOIN dataset_versions d USING (dataset)
        UNION ALL SELECT 'eval_results', r.dataset || '|' || r.student || '|' || r.seed || '|' || r.problem_id, NULL, d.style_version
            FROM eval_results r JOIN dataset_versions d USING (dataset)
    """,
}
