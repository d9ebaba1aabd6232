"""The project's error for bad input files.

Experiment files (``ExperimentError``), style files (``StyleError``) and problem files
(``ProblemFileError``) raise a subclass of :class:`InputError` whose message names the file, the
line or key, and what was expected. The command line prints it as one message and exits with
status 2 (trace_assets/cli.py); ``dagster definitions validate`` reports it as the code location's
load error.
"""


class InputError(ValueError):
    """A file the user wrote is missing or malformed; the message says where and what was expected."""


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps
        the last silently, so a second ``training:`` section would replace the first)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:  # unhashable: the base class reports it
                        continue
                    if first != key_node.start_mark.line + 1:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping",
                            node.start_mark,
                            f"found duplicate key {key!r} (first given on line {first})",
                            key_node.start_mark,
                        )
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_yaml(path, error: type[InputError], what: str):
    """The YAML document in ``path``; ``error`` (naming the file, and the line where known) if it cannot be
    read, is not UTF-8, is not YAML or repeats a key."""
    import yaml

    try:
        data = path.read_bytes()
    except OSError as problem:
        raise error(f"{path}: cannot read the {what} ({problem.strerror or problem})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        line = data[: problem.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {data[problem.start]:#04x}); save the {what} as UTF-8") from None
    try:
        return yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from None
    except RecursionError:
        raise error(f"{path}: not a valid {what}: nested too deeply") from None
