"""README's configuration reference is generated from the config models and never stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import Field

from gateway.core.config import DermGateConfig, GatewaySettings

# The repository root, wherever in tests/ this file sits.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
README = ROOT / "README.md"


def _generator() -> ModuleType:
    """scripts/config_reference.py, imported in-process (scripts/ is no package)."""
    name = "config_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "config_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_readme_reference_is_current() -> None:
    """Fails when a config model changed and README.md was not regenerated."""
    readme = README.read_text(encoding="utf-8")
    assert _generator().render(readme) == readme, (
        "README.md's configuration reference is stale: run "
        ".venv/bin/python scripts/config_reference.py and commit README.md"
    )


def test_every_key_of_every_section_is_in_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    block = readme[readme.index(_generator().START) : readme.index(_generator().END)]
    for section, field in DermGateConfig.model_fields.items():
        assert f"`[{section}]`" in block or f"`[[{section}]]`" in block, section
        models, _ = _generator()._section_models(field.annotation)
        for model in models:
            for key in model.model_fields:
                assert f"| `{key}` |" in block, f"[{section}] {key}"
    assert '`kind = "dicomweb"`' in block, "each destination kind has its own table"


def test_driver_option_tables_list_each_drivers_keys() -> None:
    readme = README.read_text(encoding="utf-8")
    assert _generator().driver_table_problems(readme) == []
    assert set(_generator().readme_driver_keys(readme)) >= {
        "serial-dermatoscope",
        "usb-confocal",
        "scanner-export",
        "photo-folder",
    }


def test_a_missing_driver_option_is_named() -> None:
    readme = README.read_text(encoding="utf-8")
    table = readme.index('Options of `driver = "serial-dermatoscope"`')
    damaged = readme[:table] + readme[table:].replace("| `baudrate` |", "| `baud_rate` |", 1)
    problems = _generator().driver_table_problems(damaged)
    assert any("serial-dermatoscope" in p and "baudrate" in p for p in problems), problems
    assert any("baud_rate" in p for p in problems), problems


def test_check_reports_a_stale_readme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "README.md"
    readme = README.read_text(encoding="utf-8")
    stale.write_text(readme.replace("Seconds to open the TCP connection.", "Old words."))
    assert _generator().main(["--check"], readme_path=stale) == 1
    assert "stale" in capsys.readouterr().err
    assert _generator().main([], readme_path=stale) == 0  # rewritten
    assert stale.read_text(encoding="utf-8") == readme
    assert _generator().main(["--check"], readme_path=stale) == 0


def test_a_key_without_description_is_refused() -> None:
    class Undocumented(GatewaySettings):
        extra_key: int = Field(default=1)

    class Root(DermGateConfig):
        gateway: Undocumented = Field(default_factory=Undocumented, description="The box.")

    with pytest.raises(SystemExit, match="extra_key"):
        _generator().reference(Root)


def test_driver_tables_are_generated_inside_their_markers() -> None:
    """Once README carries the driver-options markers, the tables come from the models."""
    gen = _generator()
    readme = README.read_text(encoding="utf-8")
    with_block = readme + f"\n{gen.DRIVERS_START}\nhand-written\n{gen.DRIVERS_END}\n"
    rendered = gen.render(with_block)
    block = rendered[rendered.index(gen.DRIVERS_START) : rendered.index(gen.DRIVERS_END)]
    assert "hand-written" not in block
    assert 'Options of `driver = "serial-dermatoscope"` (matches `/dev/ttyACM*`):' in block
    assert "USB `1d50:6189`" in block
    for driver_id, options in gen.first_party_options().items():
        assert f'`driver = "{driver_id}"`' in block
        for key in options.model_fields:
            assert f"| `{key}` |" in block, f"{driver_id} {key}"
    assert gen.driver_table_problems(rendered) == []
