"""YAML files the user writes (method manifests, task cards, Slurm profiles), read with one-line errors."""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import UsageError

# libyaml's safe loader where PyYAML has it: task cards are read when ``protocol`` is imported.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, where: str | None = None, what: str = ""):
    """The parsed YAML file, or one line naming ``where`` (default: the path) and what went wrong."""
    where = where or str(path)
    try:
        return yaml.load(Path(path).read_text(), Loader=_LOADER)
    except OSError as e:
        raise UsageError(f"{where}: cannot read{' ' + what if what else ''} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
