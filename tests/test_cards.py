import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark import cards
from benchmark.data import generator
from benchmark.errors import UsageError
from benchmark.protocol import SMOKE
from helpers import changed

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "datasets"

# The listfiles' label columns, in order: the order is part of the data (every label matrix, every
# fingerprint); it must never change silently.
PHENOTYPES = [
    "Acute and unspecified renal failure", "Acute cerebrovascular disease", "Acute myocardial infarction",
    "Cardiac dysrhythmias", "Chronic kidney disease", "Chronic obstructive pulmonary disease and bronchiectasis",
    "Complications of surgical procedures or medical care", "Conduction disorders",
    "Congestive heart failure; nonhypertensive", "Coronary atherosclerosis and other heart disease",
    "Diabetes mellitus with complications", "Diabetes mellitus without complication", "Disorders of lipid metabolism",
    "Essential hypertension", "Fluid and electrolyte disorders", "Gastrointestinal hemorrhage",
    "Hypertension with complications and secondary hypertension", "Other liver diseases",
    "Other lower respiratory disease", "Other upper respiratory disease", "Pleurisy; pneumothorax; pulmonary collapse",
    "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)",
    "Respiratory failure; insufficiency; arrest (adult)", "Septicemia (except in labor)", "Shock",
]
DIAGNOSES = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]


def test_the_papers_three_tasks_and_the_demo_have_cards_with_their_scale():
    assert cards.available_cards() == ["mimic3-demo", "mimic3-phe", "mimic4-dia", "mimic4-phe"]
    got = {}
    for name in cards.available_cards():
        card = cards.get_card(name)
        got[name] = (card.kind, card.layout, card.num_labels, card.task_weight, card.data_dir, card.task_dir,
                     card.scale.n_total, card.scale.cardinality, card.access)
    assert got == {
        "mimic4-phe": ("phenotyping", "mimic4", 25, 1.0, "mimic4", "phenotyping", 59_798, 4.575, "physionet-credentialed"),
        "mimic4-dia": ("diagnosis", "mimic4", 14, 0.2, "mimic4", "diagnosis", 132_576, 2.246, "physionet-credentialed"),
        "mimic3-phe": ("phenotyping", "mimic3-miracl", 25, 1.0, "mimic3", "phenotyping", 41_904, 4.126,
                       "physionet-credentialed"),
        "mimic3-demo": ("phenotyping", "mimic3-miracl", 25, 1.0, "mimic3-demo", "phenotyping", 113, 5.186, "open"),
    }
    demo = cards.get_card("mimic3-demo")
    assert (demo.raw_tables, demo.build, demo.scale.missing_note) == ("raw", "mimic3", 1.0)
    assert cards.get_card("mimic4-dia").task_fields == {"uncertain": "negative"}
    assert (cards.get_card("mimic4-dia").scale.missing_ehr, cards.get_card("mimic4-dia").scale.missing_note) == (0.763, 0.326)


def test_every_card_has_a_readme_and_a_citation():
    for name in cards.available_cards():
        assert (DATASETS / name / "README.md").is_file(), name
        assert cards.get_card(name).citation


def test_label_names_keep_their_column_order_in_cards_generator_and_files(tmp_path):
    assert cards.label_names("phenotyping") == PHENOTYPES
    assert cards.label_names("diagnosis") == DIAGNOSES
    # The generator's model is listed in the same order, so its random draws map to the same labels.
    assert [row[0] for row in generator.PHENOTYPES] == PHENOTYPES
    assert [row[0] for row in generator.DIAGNOSES] == DIAGNOSES
    for spec, names in zip(SMOKE.tasks, (PHENOTYPES, DIAGNOSES)):
        gen = generator.generate(spec)
        assert gen.label_names == names
        generator.write(gen, spec, tmp_path / spec.name)
        header = (tmp_path / spec.name / spec.task_dir / "train_multimodal_listfile.csv").read_text().splitlines()[0]
        assert header.endswith(",".join(names))


def test_datasets_is_data_not_a_package():
    assert not list(DATASETS.rglob("__init__.py"))
    assert not list(DATASETS.rglob("*.py"))


def _import_datasets(*path: Path) -> str:
    """``import datasets`` in a fresh interpreter run from the project root, with the root first on sys.path
    and ``path`` after it: the module's file, 'namespace <folders>' for a namespace package, or 'absent'."""
    probe = (
        "import sys; sys.path[:0] = sys.argv[1:]\n"
        "try:\n"
        "    import datasets\n"
        "except ModuleNotFoundError:\n"
        "    print('absent')\n"
        "else:\n"
        "    f = getattr(datasets, '__file__', None)\n"
        "    print(f if f else 'namespace ' + ' '.join(datasets.__path__))\n"
    )
    return subprocess.run([sys.executable, "-c", probe, str(ROOT), *map(str, path)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ""}, check=True).stdout.strip()


def test_import_datasets_finds_hugging_faces_package_even_behind_our_folder(tmp_path):
    """A regular ``datasets`` package anywhere on sys.path wins over our folder, even with the project root
    first: with no ``__init__.py`` the folder is at most a namespace portion, which any real package beats."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "__init__.py").write_text("")
    assert _import_datasets(tmp_path) == str(tmp_path / "datasets" / "__init__.py")
    found = _import_datasets()  # the environment as it is: Hugging Face's package if installed
    if not found.startswith(("absent", "namespace ")):
        assert not Path(found).resolve().is_relative_to(DATASETS.resolve()), found


def test_without_hugging_faces_package_import_datasets_runs_no_code_of_ours():
    """Without Hugging Face's package, Python makes our folder an empty namespace package (a folder without
    ``__init__.py`` cannot raise ImportError by itself): no file is executed and nothing in it is importable."""
    found = _import_datasets()
    if found.startswith("namespace "):
        assert set(found.split()[1:]) == {str(DATASETS)}, found
    else:
        assert found == "absent" or not Path(found).resolve().is_relative_to(DATASETS.resolve()), found


def test_datasets_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EHRBENCH_DATASETS", str(tmp_path))
    assert cards.datasets_dir() == tmp_path
    assert cards.available_cards() == []
    with pytest.raises(UsageError, match="no task card 'mimic4-phe'"):
        cards.get_card("mimic4-phe")


def test_an_unknown_card_name_suggests_the_close_one():
    with pytest.raises(UsageError, match=r"no task card 'mimic4-ph'; did you mean 'mimic4-phe'\?"):
        cards.get_card("mimic4-ph")


def _write(folder: Path, card: dict) -> Path:
    path = folder / card.get("name", "task") / "card.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def _card(source: str = "mimic4-dia", /, **changes) -> dict:
    return changed(yaml.safe_load((DATASETS / source / "card.yaml").read_text()), **changes)


def _without_scale(key):
    card = _card()
    del card["scale"][key]
    return card


def _with_scale(key, value):
    card = _card()
    card["scale"][key] = value
    return card


@pytest.mark.parametrize("card, field, message", [
    (_card(labels=None), "labels", "missing field 'labels' (a list: the label names, in the listfiles' column order)"),
    (_card(task_weight="heavy"), "task_weight", "field 'task_weight' must be a number, got str ('heavy')"),
    (_card(num_labels=14.0), "num_labels", "field 'num_labels' must be an integer, got float (14.0)"),
    (_card(num_labels=13), "labels", "field 'labels' lists 14 names but 'num_labels' is 13"),
    (_card(kind="diagnostic"), "kind", "field 'kind' is 'diagnostic'; did you mean 'diagnosis'?; valid choices: diagnosis, phenotyping"),
    (_card(layout="mimic5"), "layout", "field 'layout' is 'mimic5'; did you mean 'mimic4'?"),
    (_card(access="free"), "access", "field 'access' is 'free'"),
    (_card(uncertain="ignore"), "uncertain", "field 'uncertain' is 'ignore'"),
    (_card(uncertain=None), "uncertain", "missing field 'uncertain' (a diagnosis card states its rule"),
    (_card(task_wieght=0.2), "task_wieght", "unknown field 'task_wieght'; did you mean 'task_weight'?"),
    (_card(name="mimic4-dx"), "name", "field 'name' is 'mimic4-dx' but the folder is"),
    (_card(labels=DIAGNOSES[:-1] + ["Atelectasis"]), "labels", "field 'labels' lists 'Atelectasis' twice"),
    (_card(labels=DIAGNOSES[:-1] + [3]), "labels", "field 'labels' entry 14 must be a non-empty string, got int (3)"),
    (_card(task_weight=0), "task_weight", "field 'task_weight' is 0, expected a number > 0"),
    (_card(citation="  "), "citation", "field 'citation' is empty"),
    (_without_scale("n_total"), "scale.n_total", "missing field 'scale.n_total' (an integer: samples over all splits)"),
    (_with_scale("cardinality", 14.5), "scale.cardinality", "field 'scale.cardinality' is 14.5, expected a number in (0, 14)"),
    (_with_scale("missing_ehr", 1.2), "scale.missing_ehr", "field 'scale.missing_ehr' is 1.2, expected a share in [0, 1)"),
    (_with_scale("n_rows", 3), "scale.n_rows", "unknown field 'scale.n_rows'"),
    (_card(scale=[1, 2]), "scale", "field 'scale' must be a mapping, got list"),
    (_card(max_hours=0), "max_hours", "field 'max_hours' is 0, expected an integer >= 1"),
])
def test_a_bad_card_is_one_line_naming_the_file_and_the_field(tmp_path, card, field, message):
    if card.get("name") == "mimic4-dx":  # written under another folder than its name
        path = tmp_path / "mimic4-dia" / "card.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(card))
    else:
        path = _write(tmp_path, card)
    with pytest.raises(UsageError) as err:
        cards.read_card(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ") and f"'{field}'" in text
    assert message in text


@pytest.mark.parametrize("content, message", [
    ("kind: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping of fields, got list"),
    ("", "expected a mapping of fields, got nothing"),
])
def test_a_card_that_is_not_a_mapping_says_so(tmp_path, content, message):
    path = tmp_path / "task" / "card.yaml"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(UsageError, match=f"^{re.escape(str(path))}: {message}"):
        cards.read_card(path)
    with pytest.raises(UsageError, match=f"^{re.escape(str(tmp_path / 'nothing' / 'card.yaml'))}: cannot read the task card"):
        cards.read_card(tmp_path / "nothing" / "card.yaml")


def test_cards_of_one_kind_must_agree_on_their_labels(tmp_path, monkeypatch):
    for name in ("mimic4-phe", "mimic3-phe"):
        _write(tmp_path, _card(name))
    swapped = _card("mimic3-phe")
    swapped["labels"][0], swapped["labels"][1] = swapped["labels"][1], swapped["labels"][0]
    path = _write(tmp_path, swapped)
    monkeypatch.setenv("EHRBENCH_DATASETS", str(tmp_path))
    other = re.escape(str(tmp_path / "mimic4-phe" / "card.yaml"))  # cards are read in name order
    with pytest.raises(UsageError, match=f"^{other}: field 'labels' differs from {re.escape(str(path))} .*same order"):
        cards.label_names("phenotyping")
    only = tmp_path / "phenotyping-only"
    _write(only, _card("mimic4-phe"))
    monkeypatch.setenv("EHRBENCH_DATASETS", str(only))
    assert cards.label_names("phenotyping") == PHENOTYPES
    with pytest.raises(UsageError, match="no task card of kind 'diagnosis'"):
        cards.label_names("diagnosis")


def test_card_floats_stay_floats_whatever_yaml_made_of_them(tmp_path):
    card = _card("mimic4-phe", task_weight=1)
    card["scale"]["missing_ehr"] = 0
    loaded = cards.read_card(_write(tmp_path, card))
    assert type(loaded.task_weight) is float and type(loaded.scale.missing_ehr) is float
