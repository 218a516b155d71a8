"""KFD topology: parsing real dumps, the sysfs round trip, and the emulated boards."""

import os
from pathlib import Path

import msgpack
import pytest

from kfdtrace.driver.emulator.boards import (
    BOARDS,
    DEFAULT_BOARD,
    emulated_topology,
    parse_emulate_spec,
)
from kfdtrace.driver.families import TARGETS, UnsupportedTarget, queue_sizes
from kfdtrace.driver.topology import (
    IOLINK_TYPE_PCIEXPRESS,
    IOLINK_TYPE_XGMI,
    KFD_TOPOLOGY,
    NODE_PROPERTY_ORDER,
    DictSysfs,
    DirectorySysfs,
    Node,
    Topology,
    TopologyError,
    dump_to_directory,
    format_properties,
    parse_properties,
    read_topology,
    write_sysfs_tree,
)

FIXTURES = Path(__file__).parent / "fixtures" / "topologies"
NODES = f"{KFD_TOPOLOGY}/nodes"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_mi300x_dump():
    props = parse_properties(fixture_text("mi300x.properties"))
    assert len(props) == 38
    assert props["gfx_target_version"] == 90402
    assert props["simd_count"] == 1216 and props["num_xcc"] == 8
    assert props["num_sdma_engines"] == 2 and props["num_sdma_xgmi_engines"] == 14
    assert props["hive_id"] == 10631624818852212319 > 2**63  # printed with %llu
    assert props["unique_id"] == 4376936076086227261


def test_parse_7900xtx_dump():
    props = parse_properties(fixture_text("rx7900xtx.properties"))
    assert props["gfx_target_version"] == 110000
    assert props["wave_front_size"] == 32 and props["simd_count"] == 192
    assert props["unique_id"] == 11420932837461522459


def test_parse_r9700_partial():
    props = parse_properties(fixture_text("r9700_gfx1201_partial.properties"))
    assert len(props) == 17
    assert props["cwsr_size"] == 30699520 and props["ctl_stack_size"] == 28672


@pytest.mark.parametrize("name", ["mi300x.properties", "rx7900xtx.properties"])
def test_writer_reproduces_the_kernel_order_of_real_dumps(name):
    text = "".join(line + "\n" for line in fixture_text(name).splitlines() if not line.startswith("#"))
    assert format_properties(parse_properties(text), NODE_PROPERTY_ORDER) == text


def test_parse_ignores_blank_and_comment_lines():
    assert parse_properties("# header\n\nsimd_count 4\n   \n  # note\nnum_xcc 1\n") == {
        "simd_count": 4,
        "num_xcc": 1,
    }


@pytest.mark.parametrize("bad", ["simd_count\n", "simd_count four\n", "simd_count -1\n", "sibling_map 1,2\n"])
def test_parse_rejects_malformed_lines(bad):
    with pytest.raises(ValueError):
        parse_properties(bad)


def test_sibling_map_round_trip():
    text = "level 1\nsize 16\ntype 9\nsibling_map 1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,1\n"
    props = parse_properties(text)
    assert props["sibling_map"] == 0b1000000000000011 and props["sibling_map_bits"] == 16
    assert format_properties(props) == text
    assert format_properties(parse_properties("sibling_map\n")) == "sibling_map\n"


def test_format_rejects_non_integers():
    with pytest.raises(TypeError):
        format_properties({"simd_count": "4"})


# --- reading trees -----------------------------------------------------------------------------------------


def test_read_minimal_tree_without_optional_parts():
    files = {
        f"{NODES}/0/gpu_id": "0\n",
        f"{NODES}/0/properties": "cpu_cores_count 16\nsimd_count 0\n",
        f"{NODES}/1/gpu_id": "4242\n",
        f"{NODES}/1/properties": fixture_text("rx7900xtx.properties"),
    }
    topo = read_topology(DictSysfs(files))
    assert [n.index for n in topo.nodes] == [0, 1]
    assert topo.system_properties == {} and topo.generation_id == 0
    gpu = topo.gpu(4242)
    assert gpu.is_gpu and gpu.name == "" and gpu.mem_banks == [] and gpu.p2p_links == []
    assert gpu.gfx_target_version == 110000 and gpu.drm_render_minor == 128
    assert not topo.nodes[0].is_gpu and topo.gpus == [gpu]


def test_nodes_are_read_in_numeric_order():
    files = {f"{NODES}/{i}/gpu_id": f"{i}\n" for i in (10, 2, 1)}
    files.update({f"{NODES}/{i}/properties": "simd_count 4\n" for i in (10, 2, 1)})
    assert [n.index for n in read_topology(DictSysfs(files)).nodes] == [1, 2, 10]


def test_gpu_without_properties_is_an_error_naming_the_path():
    files = {f"{NODES}/0/gpu_id": "0\n", f"{NODES}/1/gpu_id": "4242\n", f"{NODES}/1/name": "ip discovery\n"}
    with pytest.raises(TopologyError, match=f"{NODES}/1/properties"):
        read_topology(DictSysfs(files))


def test_cpu_without_properties_is_tolerated():
    topo = read_topology(DictSysfs({f"{NODES}/0/gpu_id": "0\n"}))
    assert topo.nodes[0].properties == {}


def test_missing_topology_is_an_error():
    with pytest.raises(TopologyError, match="nodes"):
        read_topology(DictSysfs({"/sys/class/other": "x"}))


def test_malformed_file_error_names_the_path():
    files = {f"{NODES}/1/gpu_id": "7\n", f"{NODES}/1/properties": "simd_count lots\n"}
    with pytest.raises(TopologyError, match=f"{NODES}/1/properties"):
        read_topology(DictSysfs(files))


def test_dict_sysfs_lists_implied_directories():
    sysfs = DictSysfs({"/a/b/c": "1", "/a/d": "2"})
    assert sysfs.list_sysfs("/a") == ["b", "d"] and sysfs.list_sysfs("/a/b/") == ["c"]
    assert sysfs.read_sysfs("a/d") == "2"
    with pytest.raises(FileNotFoundError):
        sysfs.read_sysfs("/a/b")
    with pytest.raises(FileNotFoundError):
        sysfs.list_sysfs("/a/d")


def test_directory_sysfs_with_root_slash_reads_absolute_paths(tmp_path):
    (tmp_path / "props").write_text("simd_count 4\n")
    sysfs = DirectorySysfs("/")
    assert sysfs.read_sysfs(str(tmp_path / "props")) == "simd_count 4\n"
    assert sysfs.list_sysfs(str(tmp_path)) == ["props"]
    with pytest.raises(FileNotFoundError):
        sysfs.read_sysfs(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        sysfs.list_sysfs(str(tmp_path / "props"))


# --- round trips -------------------------------------------------------------------------------------------

COMBOS = [
    ["gfx942"],
    ["gfx1100"],
    ["gfx942", "gfx1100"],
    ["gfx942", "gfx942", "gfx90a", "gfx1201"],
    list(DEFAULT_BOARD),
]


@pytest.mark.parametrize("targets", COMBOS, ids=lambda t: ",".join(t))
def test_emulated_tree_round_trips_through_dict_sysfs(targets):
    topo = emulated_topology(targets)
    assert read_topology(DictSysfs(write_sysfs_tree(topo))) == topo


def test_dump_to_directory_round_trips(tmp_path):
    topo = emulated_topology(["gfx942", "gfx1100"])
    dump_to_directory(topo, tmp_path)
    assert (tmp_path / NODES.lstrip("/") / "1" / "properties").is_file()
    assert (tmp_path / NODES.lstrip("/") / "0" / "caches").is_dir()  # empty, as the kernel leaves it
    assert read_topology(DirectorySysfs(tmp_path)) == topo
    assert read_topology(DirectorySysfs(os.fspath(tmp_path) + "/")) == topo


def test_to_dict_is_plain_data_and_survives_msgpack():
    topo = emulated_topology(["gfx942", "gfx1100"])
    data = topo.to_dict()
    packed = msgpack.unpackb(msgpack.packb(data), strict_map_key=False)
    assert Topology.from_dict(packed) == topo
    assert Node.from_dict(data["nodes"][1]) == topo.nodes[1]


def test_written_tree_has_the_kernel_files():
    files = write_sysfs_tree(emulated_topology(["gfx1100"]))
    assert files[f"{KFD_TOPOLOGY}/system_properties"] == "platform_oem 0\nplatform_id 0\nplatform_rev 0\n"
    assert files[f"{NODES}/0/gpu_id"] == "0\n" and files[f"{NODES}/0/name"] == "\n"
    assert files[f"{NODES}/1/name"] == "ip discovery\n"
    for path in ("properties", "mem_banks/0/properties", "caches/0/properties", "io_links/0/properties"):
        assert f"{NODES}/1/{path}" in files
    assert files[f"{NODES}/1/mem_banks/0/properties"].startswith("heap_type 1\nsize_in_bytes 25753026560\n")


# --- emulated boards ---------------------------------------------------------------------------------------


def test_every_target_has_a_default_board():
    assert sorted(DEFAULT_BOARD) == sorted(t.name for t in TARGETS)
    for name, key in DEFAULT_BOARD.items():
        assert next(b for b in BOARDS if b.key == key).target == name


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.key)
def test_board_exports_kernel_cwsr_sizes(board):
    gpu = emulated_topology([board.key]).gpus[0]
    sizes = queue_sizes(gpu.properties)
    assert gpu.properties["cwsr_size"] == sizes.cwsr_size > 0
    assert gpu.properties["ctl_stack_size"] == sizes.ctl_stack_size > 0
    assert gpu.gfx_target_version == next(t for t in TARGETS if t.name == board.target).gfx_target_version
    assert gpu.vram_size == board.vram_bytes and gpu.cu_count == board.cu_count
    assert list(gpu.properties) == [k for k in NODE_PROPERTY_ORDER if k in gpu.properties]


def test_board_counts_match_the_files():
    topo = emulated_topology(["gfx942", "gfx942", "gfx1100", "gfx1036"])
    for node in topo.nodes:
        p = node.properties
        assert p["mem_banks_count"] == len(node.mem_banks) and p["caches_count"] == len(node.caches)
        assert p["io_links_count"] == len(node.io_links) and p["p2p_links_count"] == len(node.p2p_links)


# Keys the emulation derives per instance or from the emulated CPU/kernel, so they may differ from a dump.
DERIVED = {"caches_count", "io_links_count", "p2p_links_count", "simd_id_base", "max_engine_clk_ccompute"}


DUMPS = [("gfx942", "mi300x.properties"), ("gfx1100", "rx7900xtx.properties")]


@pytest.mark.parametrize("target,name", DUMPS)
def test_single_board_reproduces_its_dump(target, name):
    dump = parse_properties(fixture_text(name))
    props = emulated_topology([target]).gpus[0].properties
    assert {k: v for k, v in props.items() if k in dump and k not in DERIVED} == {
        k: v for k, v in dump.items() if k not in DERIVED
    }


def test_r9700_keeps_its_captured_values():
    partial = parse_properties(fixture_text("r9700_gfx1201_partial.properties"))
    gpu = emulated_topology(["gfx1201"]).gpus[0]
    assert {k: gpu.properties[k] for k in partial} == partial
    assert gpu.mem_banks[0]["heap_type"] == 2 and gpu.vram_size == 34208743424


def test_mi300x_counts():
    gpu = emulated_topology(["gfx942"]).gpus[0]
    assert gpu.cu_count == 304 and gpu.num_xcc == 8
    assert (gpu.num_sdma_engines, gpu.num_sdma_xgmi_engines) == (2, 14)
    assert gpu.vram_size == 206141652992


def test_topology_layout_and_identities():
    topo = emulated_topology(["gfx942", "gfx1100", "gfx1100", "gfx90a"])
    cpu, *gpus = topo.nodes
    assert cpu.index == 0 and not cpu.is_gpu and cpu.properties["cpu_cores_count"] > 0
    assert cpu.mem_banks[0]["heap_type"] == 0 and "num_xcc" not in cpu.properties
    assert [g.index for g in gpus] == [1, 2, 3, 4] and topo.gpus == gpus
    assert [g.gfx_target_version for g in gpus] == [90402, 110000, 110000, 90010]
    ids = [g.gpu_id for g in gpus]
    assert len(set(ids)) == 4 and all(0 < i < 2**16 for i in ids)
    assert [g.drm_render_minor for g in gpus] == [128, 129, 130, 131]
    for key in ("location_id", "unique_id", "simd_id_base"):
        assert len({g.properties[key] for g in gpus}) == 4, key
    assert emulated_topology(["gfx942", "gfx1100", "gfx1100", "gfx90a"]) == topo  # deterministic
    assert topo.gpu(ids[2]) is gpus[2]
    with pytest.raises(KeyError):
        topo.gpu(0)


def test_every_gpu_links_to_the_cpu_both_ways():
    topo = emulated_topology(["gfx942", "gfx1201"])
    for gpu in topo.gpus:
        assert topo.link(gpu.index, 0)["type"] == IOLINK_TYPE_PCIEXPRESS
        assert topo.link(0, gpu.index)["node_from"] == 0
    assert topo.link(1, 0)["max_bandwidth"] == 64000  # PCIe 5.0 x16 as KFD counts it


def test_two_gpus_have_p2p_links_both_ways():
    topo = emulated_topology(["gfx942", "gfx1100"])
    a, b = topo.gpus
    assert [(link["node_from"], link["node_to"]) for link in a.p2p_links] == [(1, 2)]
    assert [(link["node_from"], link["node_to"]) for link in b.p2p_links] == [(2, 1)]
    for link in a.p2p_links + b.p2p_links:
        assert link["type"] == IOLINK_TYPE_PCIEXPRESS and link["weight"] == 40


def test_hive_peers_link_over_xgmi_both_ways():
    # GPUs sharing a hive_id get direct xGMI io_links (CRAT) and no p2p_links:
    # kfd_dev_create_p2p_links skips same-hive pairs.
    topo = emulated_topology(["gfx942", "gfx942", "gfx1100"])
    m1, m2, navi = topo.gpus
    assert m1.properties["hive_id"] == m2.properties["hive_id"] != 0
    for x, y in ((m1, m2), (m2, m1)):
        link = topo.link(x.index, y.index)
        assert link["type"] == IOLINK_TYPE_XGMI and link["weight"] == 15
        assert link["recommended_sdma_engine_id_mask"] >> x.num_sdma_engines  # an xGMI engine
    assert m1.p2p_links == [l for l in m1.p2p_links if l["node_to"] == navi.index] != []  # noqa: E741
    for x, y in ((m1, navi), (navi, m1), (m2, navi), (navi, m2)):
        assert topo.link(x.index, y.index)["type"] == IOLINK_TYPE_PCIEXPRESS
    assert topo.link(1, 1) is None


def test_different_hives_use_pcie():
    topo = emulated_topology(["gfx942", "gfx90a"])
    assert topo.link(1, 2)["type"] == IOLINK_TYPE_PCIEXPRESS


def test_unknown_target():
    with pytest.raises(UnsupportedTarget, match="gfx9000"):
        emulated_topology(["gfx942", "gfx9000"])


def test_parse_emulate_spec():
    assert parse_emulate_spec("gfx942,gfx1100") == ["gfx942", "gfx1100"]
    assert parse_emulate_spec("2xgfx942,mi210") == ["gfx942", "gfx942", "mi210"]
    assert len(emulated_topology(parse_emulate_spec("3xgfx1100")).gpus) == 3


@pytest.mark.parametrize("spec,bad", [("gfx942,gfx908", "gfx908"), ("0xgfx942", "0xgfx942"), ("", "")])
def test_parse_emulate_spec_errors_name_the_item_and_the_supported_list(spec, bad):
    with pytest.raises(UnsupportedTarget) as info:
        parse_emulate_spec(spec)
    message = str(info.value)
    assert repr(bad) in message and "gfx942 (90402)" in message and "mi300x (gfx942)" in message
