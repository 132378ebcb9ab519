"""Store map: validation errors name the entry and field; resolution by header, number, default."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.stores import StoreMapError, load_store_map

GOOD = """
header: X-Store-Id
attribute: store.id
default: main
stores:
  main:
    name: Main Street
    numbers: ["+15550201"]
    hold_audio: main.flac
  downtown:
    name: Downtown
    numbers: ["+15550202", "+15550203"]
    header_values: ["0042"]
    hold_audio: /ABS/downtown.flac
    announcement: thanks.flac
    announcement_every_s: 20
    max_wait_s: 300
    fallback: transfer
    transfer_target: tel:+15550111
"""


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    for f in ("main.flac", "downtown.flac", "thanks.flac"):
        (tmp_path / f).write_bytes(b"x")
    return tmp_path


def write(d: Path, text: str) -> Path:
    p = d / "stores.yaml"
    p.write_text(text.replace("/ABS", str(d)))
    return p


def test_good_map_and_resolution(store_dir: Path) -> None:
    m = load_store_map(write(store_dir, GOOD))
    assert m.numbers == ["+15550201", "+15550202", "+15550203"]
    assert m.headers_to_attributes() == {"X-Store-Id": "store.id"}
    main = m.model.stores["main"]
    assert main.hold_audio == store_dir / "main.flac"  # relative to the map
    dt = m.model.stores["downtown"]
    assert dt.announcement == store_dir / "thanks.flac" and dt.max_wait_s == 300
    by_header = m.resolve({"store.id": "0042", "sip.trunkPhoneNumber": "+15550201"})
    assert (by_header.key, by_header.matched_by) == ("downtown", "header")
    by_number = m.resolve({"sip.trunkPhoneNumber": "+15550203"})
    assert (by_number.key, by_number.matched_by) == ("downtown", "number")
    # a store without header_values is matched by its key
    assert m.resolve({"store.id": "main"}).key == "main"
    unknown = m.resolve({"sip.trunkPhoneNumber": "+15559999", "store.id": "nope"})
    assert (unknown.key, unknown.matched_by) == ("main", "default")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("default: main", "default: nowhere"), "default: 'nowhere' is not one of the stores"),
        (('["+15550201"]', '["555-0201"]'), "stores.main.numbers: '555-0201' is not an E.164"),
        (('["+15550201"]', '["+15550202"]'), "stores.downtown.numbers: +15550202 is also"),
        (("hold_audio: main.flac", "hold_audio: gone.flac"), "stores.main.hold_audio: file not"),
        (("fallback: transfer", "fallback: later"), "stores.downtown.fallback: Input should be"),
        (("tel:+15550111", "''"), "stores.downtown: fallback: transfer needs"),
        (
            ("tel:+15550111", "'+15550111'"),
            "stores.downtown.transfer_target: must be a tel: or sip:",
        ),
        (("announcement_every_s: 20", "announcement_every_s: 1"), "announcement_every_s: Input"),
        (("    name: Downtown\n", ""), "stores.downtown.name: Field required"),
        (("    name: Downtown\n", "    name: Downtown\n    colour: red\n"), "downtown.colour"),
        (("X-Store-Id", "X Store"), "header: 'X Store' is not a SIP header"),
        (("attribute: store.id", "attribute: sip.store"), "attribute: 'sip.store': use"),
    ],
)
def test_errors_name_entry_and_field(store_dir: Path, edit: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(StoreMapError) as e:
        load_store_map(write(store_dir, text))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(store_dir / "stores.yaml"))
    assert expected in msg, msg


def test_broken_yaml_and_missing_file(store_dir: Path) -> None:
    with pytest.raises(StoreMapError, match=r"line \d+"):
        load_store_map(write(store_dir, "stores: [unclosed\n"))
    with pytest.raises(StoreMapError, match="file not found"):
        load_store_map(store_dir / "nope.yaml")
    with pytest.raises(StoreMapError, match="expected a mapping"):
        load_store_map(write(store_dir, "- a\n- b\n"))


def test_example_map_in_deploy_is_valid() -> None:
    from worker.settings import DEFAULT_ANNOUNCEMENT

    repo = Path(__file__).resolve().parents[2]
    m = load_store_map(
        repo / "deploy" / "stores.example.yaml", default_announcement=DEFAULT_ANNOUNCEMENT
    )
    assert m.model.stores["main"].announcement == DEFAULT_ANNOUNCEMENT
    assert m.resolve({"store.id": "0042"}).key == "downtown"


def test_position_announcements_are_off_by_default_and_english(store_dir: Path) -> None:
    m = load_store_map(write(store_dir, GOOD))
    for store in m.model.stores.values():
        assert store.language == "en"
        assert store.position_announcements.enabled is False


def test_position_announcements_settings(store_dir: Path) -> None:
    (store_dir / "prompts").mkdir()
    m = load_store_map(
        write(
            store_dir,
            GOOD
            + "    language: de\n"
            + "    position_announcements:\n"
            + "      enabled: true\n"
            + "      first_after_s: 15\n"
            + "      every_s: 45\n"
            + "      min_gap_s: 20\n"
            + "      many_callers_above: 5\n"
            + "      announce_wait: false\n"
            + "      prompts_dir: prompts\n",
        )
    )
    pa = m.model.stores["downtown"].position_announcements
    assert m.model.stores["downtown"].language == "de"
    assert (pa.enabled, pa.first_after_s, pa.every_s, pa.min_gap_s) == (True, 15, 45, 20)
    assert (pa.many_callers_above, pa.announce_wait) == (5, False)
    assert pa.prompts_dir == store_dir / "prompts"  # relative to the map


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "    language: 'en us'\n",
            "stores.downtown.language: 'en us' is not an espeak-ng voice name",
        ),
        (
            "    position_announcements: {many_callers_above: 21}\n",
            "stores.downtown.position_announcements.many_callers_above: "
            "Input should be less than or equal to 20",
        ),
        (
            "    position_announcements: {every_s: 2}\n",
            "stores.downtown.position_announcements.every_s: Input should be greater",
        ),
        (
            "    position_announcements: {phrases: {hello: Hi}}\n",
            "stores.downtown.position_announcements.phrases: 'hello' is not a phrase",
        ),
        (
            "    position_announcements: {enabled: true, prompts_dir: nowhere}\n",
            "stores.downtown.position_announcements.prompts_dir: not a directory",
        ),
        (
            "    language: pl\n    position_announcements: {enabled: true}\n",
            "stores.downtown: position_announcements: no built-in phrases in 'pl'",
        ),
        (
            "    position_announcements: {enabeld: true}\n",
            "stores.downtown.position_announcements.enabeld: Extra inputs are not permitted",
        ),
        (
            "    keypad: {operator_key: '0', operator_target: desk}\n",
            "stores.downtown.keypad.operator_target: must be a tel: or sip: URI",
        ),
    ],
)
def test_position_announcements_errors_are_one_line(
    store_dir: Path, extra: str, message: str
) -> None:
    with pytest.raises(StoreMapError) as e:
        load_store_map(write(store_dir, GOOD + extra))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_language_without_phrases_may_bring_its_own(store_dir: Path) -> None:
    from worker.announce import PHRASE_KEYS

    phrases = "".join(f"        {k}: tekst {i}\n" for i, k in enumerate(PHRASE_KEYS))
    m = load_store_map(
        write(
            store_dir,
            GOOD
            + "    language: pl\n    position_announcements:\n      enabled: true\n"
            + "      phrases:\n"
            + phrases,
        )
    )
    assert m.model.stores["downtown"].position_announcements.phrases["minutes"] == "tekst 3"
