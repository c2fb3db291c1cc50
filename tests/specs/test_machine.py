"""Hand-computed checks of specs/machine.py against Linux 4.6 mm/page_alloc.c and
mm/huge_memory.c.

Every expected number is derived by hand in the comment beside it from the 4.6 formulas:
zone_batchsize / pageset_set_batch / pageset_set_high, init_per_zone_wmark_min,
__setup_per_zone_wmarks, setup_per_zone_lowmem_reserve and set_recommended_min_free_kbytes.
"""

from __future__ import annotations

import attrs
import pytest

from specs import machine
from specs.machine import MachineConfig

DMA_END_4_6 = 4096          # 16 MiB >> 12 [4.6: MAX_DMA_PFN]
DMA32_END_4_6 = 1048576     # 4 GiB >> 12 [4.6: MAX_DMA32_PFN]
THP_MIN_PAGES_4_6 = 131072  # 512 MiB >> 12 [4.6: hugepage_init]


def config(nr_pages: int, **changes) -> MachineConfig:
    """A one-CPU machine with the given size and knobs."""
    return MachineConfig(name="t", nr_pages=nr_pages, nr_cpus=1, **changes)


def zone_table(cfg: MachineConfig, field: str) -> tuple:
    """One ZoneGeometry field for every zone, DMA..Movable."""
    return tuple(getattr(zone, field) for zone in machine.derive_zones(cfg))


# -- per-cpu page lists ---------------------------------------------------------------------

@pytest.mark.parametrize(("managed", "expected"), [
    # batch = managed/1024, capped at 128 (512 KiB), /4, at least 1, then
    # rounddown_pow_of_two(b + b/2) - 1.
    (131072, 31),    # 512 MiB: 128 -> 32 -> 48 -> 32 - 1 = 31
    (1044480, 31),   # 1020 capped to 128 -> 31
    (3145728, 31),
    (65536, 15),     # 64 -> 16 -> 24 -> 16 - 1
    (32768, 7),      # 32 -> 8 -> 12 -> 8 - 1
    (28672, 7),      # 28 -> 7 -> 10 -> 8 - 1
    (16384, 3),      # 16 -> 4 -> 6 -> 4 - 1
    (8192, 1),       # 8 -> 2 -> 3 -> 2 - 1
    (4096, 0),       # 16 MiB DMA: 4 -> 1 -> 1 -> 1 - 1
    (1536, 0),       # 1 -> 0 -> max 1 -> 0
    (0, 0),          # empty zone: 0 -> max 1 -> 0
])
def test_zone_batchsize(managed, expected):
    """zone_batchsize follows 4.6's 1/1024, 512 KiB cap, /4 and 2^n-1 clamp."""
    assert expected == machine.zone_batchsize(managed)


@pytest.mark.parametrize(("managed", "expected"), [
    (131072, (186, 31)),   # pageset_set_batch(31): high = 6 * 31, batch = 31
    (4194304, (186, 31)),
    (4096, (0, 1)),        # batch 0: high = 0, batch = max(1, 0) = 1
    (16384, (18, 3)),      # 6 * 3
])
def test_pcp_high_batch_default(managed, expected):
    """Without percpu_pagelist_fraction a zone gets high = 6 * batch and batch >= 1."""
    assert expected == machine.pcp_high_batch(config(4096), managed)


@pytest.mark.parametrize(("fraction", "managed", "expected"), [
    # pageset_set_high: high = managed / f; batch = max(1, high/4), capped at PAGE_SHIFT*8 = 96
    (8, 1044480, (130560, 96)),   # high/4 = 32640 > 96
    (8, 4096, (512, 96)),         # high/4 = 128 > 96
    (100, 16384, (163, 40)),      # high/4 = 40
    (8, 1536, (192, 48)),
    (8, 12, (1, 1)),              # high/4 = 0 -> max(1, 0)
])
def test_pcp_high_batch_percpu_pagelist_fraction(fraction, managed, expected):
    """With percpu_pagelist_fraction a zone gets high = managed / f and a batch of high/4 in
    [1, 96]."""
    cfg = config(4096, percpu_pagelist_fraction=fraction)
    assert expected == machine.pcp_high_batch(cfg, managed)


def test_pcp_high_batch_override():
    """The customised pcp_batch_override replaces zone_batchsize and keeps high = 6 * batch."""
    assert (12, 2) == machine.pcp_high_batch(config(4096, pcp_batch_override=2), 1536)


# -- min_free_kbytes ------------------------------------------------------------------------

@pytest.mark.parametrize(("lowmem_mib", "expected"), [
    # [4.6: init_per_zone_wmark_min comment table] min_free_kbytes = int_sqrt(lowmem_kb * 16)
    (16, 512), (32, 724), (64, 1024), (128, 1448), (256, 2048), (512, 2896),
    (1024, 4096), (2048, 5792), (4096, 8192),
    # The comment says 11584k, but int_sqrt(8388608 * 16 = 134217728) = 11585 because
    # 11585^2 = 134212225 <= 134217728 < 11586^2 = 134235396; the code, not the comment, rules.
    (8192, 11585),
    (16384, 16384),
])
def test_boot_min_free_kbytes_table(lowmem_mib, expected):
    """The boot min_free_kbytes is int_sqrt(lowmem_kbytes * 16), matching 4.6's table."""
    assert expected == machine.boot_min_free_kbytes(lowmem_mib << 8)


@pytest.mark.parametrize(("lowmem_pages", "expected"), [
    (0, 128),            # sqrt(0) = 0 -> clamped up to 128
    (100, 128),          # sqrt(400 * 16) = 80 -> 128
    (256, 128),          # sqrt(1024 * 16) = 128 exactly
    (257, 128),          # sqrt(1028 * 16) = 128.2 -> 128
    (67108864, 65536),   # 256 GiB: sqrt(268435456 * 16) = 65536 exactly
    (268435456, 65536),  # 1 TiB: 131072 -> clamped down to 65536
])
def test_boot_min_free_kbytes_clamp(lowmem_pages, expected):
    """The boot min_free_kbytes is clamped to [128, 65536]."""
    assert expected == machine.boot_min_free_kbytes(lowmem_pages)


# -- watermarks -----------------------------------------------------------------------------

def test_wmarks_single_64mib_zone():
    """A single 64 MiB zone gets min 256, low 320, high 384 from min_free_kbytes 1024."""
    # pages_min = 1024 >> 2 = 256; tmp = 256 * 16384 / 16384 = 256;
    # delta = max(256 >> 2 = 64, 16384 * 10 / 10000 = 16) = 64 -> 320, 384.
    assert ((256, 320, 384),) == machine.per_zone_wmarks(1024, (16384,), 10)


def test_wmarks_single_64mib_zone_machine():
    """A 64 MiB machine whose only zone is DMA boots with min_free_kbytes 1024 and marks
    256/320/384."""
    # lowmem = 16384 pages = 65536 KiB; int_sqrt(65536 * 16) = 1024.
    cfg = config(16384, dma_end_pfn=16384)
    actual = (machine.effective_min_free_kbytes(cfg), zone_table(cfg, "watermark"))
    assert (1024, ((256, 320, 384), (0, 0, 0), (0, 0, 0), (0, 0, 0))) == actual


def test_wmarks_scale_factor_dominates():
    """The scale-factor delta replaces min/4 when it is larger."""
    # pages_min = 128 >> 2 = 32; zone 100000 of 100000: tmp = 32;
    # delta = max(8, mult_frac(100000, 10, 10000) = 100) = 100 -> low 132, high 232.
    assert ((32, 132, 232),) == machine.per_zone_wmarks(128, (100000,), 10)


# The three presets.  tiny: DMA [0,1536), DMA32 [1536,2560), Normal [2560,4096) = 1536/1024/1536.
# small: DMA [0,4096), DMA32 [4096,32768), Normal [32768,65536) = 4096/28672/32768.
# large: DMA [0,4096), DMA32 [4096,1048576), Normal [1048576,4194304) = 4096/1044480/3145728.

@pytest.mark.parametrize(("name", "expected"), [
    ("tiny", ((0, 1536), (1536, 2560), (2560, 4096), (4096, 4096))),
    ("small", ((0, 4096), (4096, 32768), (32768, 65536), (65536, 65536))),
    ("large", ((0, 4096), (4096, 1048576), (1048576, 4194304), (4194304, 4194304))),
])
def test_preset_zone_spans(name, expected):
    """Each preset splits its memory into the zone spans its boundaries give."""
    assert expected == machine.preset(name).zone_spans()


@pytest.mark.parametrize(("name", "expected"), [
    # tiny: 4096 pages = 16 MiB -> 512 (no THP below 512 MiB)
    ("tiny", 512),
    # small: 65536 pages = 256 MiB -> 2048
    ("small", 2048),
    # large: boot 16384 (16 GiB), then THP raises it: 3 populated zones,
    # 512*3*2 + 512*3*9 = 16896 pages, far below 5% of lowmem -> 16896 << 2 = 67584 KiB
    ("large", 67584),
])
def test_preset_min_free_kbytes(name, expected):
    """Each preset runs with the min_free_kbytes 4.6 would settle on."""
    assert expected == machine.effective_min_free_kbytes(machine.preset(name))


@pytest.mark.parametrize(("name", "expected"), [
    # tiny, pages_min = 512 >> 2 = 128 over 4096 lowmem pages:
    #   DMA 128*1536/4096 = 48, delta max(12, 1) = 12 -> 48/60/72
    #   DMA32 128*1024/4096 = 32, delta max(8, 1) = 8 -> 32/40/48
    #   Normal as DMA -> 48/60/72; Movable (0 pages) 0/0/0
    ("tiny", ((48, 60, 72), (32, 40, 48), (48, 60, 72), (0, 0, 0))),
    # small, pages_min = 2048 >> 2 = 512 over 65536:
    #   DMA 512*4096/65536 = 32, delta max(8, 4) = 8 -> 32/40/48
    #   DMA32 512*28672/65536 = 224, delta max(56, 28) = 56 -> 224/280/336
    #   Normal 512*32768/65536 = 256, delta max(64, 32) = 64 -> 256/320/384
    ("small", ((32, 40, 48), (224, 280, 336), (256, 320, 384), (0, 0, 0))),
    # large, pages_min = 67584 >> 2 = 16896 over 4194304:
    #   DMA 16896*4096/4194304 = 16.5 -> 16, delta max(4, 4) = 4 -> 16/20/24
    #   DMA32 16896*1044480/4194304 = 4207.5 -> 4207, delta max(1051, 1044) = 1051
    #     -> 4207/5258/6309
    #   Normal 16896*3/4 = 12672, delta max(3168, 3145) = 3168 -> 12672/15840/19008
    ("large", ((16, 20, 24), (4207, 5258, 6309), (12672, 15840, 19008), (0, 0, 0))),
])
def test_preset_watermarks(name, expected):
    """Each preset's zones get 4.6's MIN/LOW/HIGH watermarks."""
    assert expected == zone_table(machine.preset(name), "watermark")


@pytest.mark.parametrize(("name", "expected"), [
    # lower_zone->lowmem_reserve[j] = (managed of zones idx+1..j) / ratio[idx], ratio 256/256/32
    # tiny: DMA [1] = 1024/256 = 4, [2] = [3] = 2560/256 = 10; DMA32 [2] = [3] = 1536/256 = 6
    ("tiny", ((0, 4, 10, 10), (0, 0, 6, 6), (0, 0, 0, 0), (0, 0, 0, 0))),
    # small: DMA [1] = 28672/256 = 112, [2] = [3] = 61440/256 = 240; DMA32 [2] = 32768/256 = 128
    ("small", ((0, 112, 240, 240), (0, 0, 128, 128), (0, 0, 0, 0), (0, 0, 0, 0))),
    # large: DMA [1] = 1044480/256 = 4080, [2] = [3] = 4190208/256 = 16368;
    #        DMA32 [2] = [3] = 3145728/256 = 12288
    ("large", ((0, 4080, 16368, 16368), (0, 0, 12288, 12288), (0, 0, 0, 0), (0, 0, 0, 0))),
])
def test_preset_lowmem_reserve(name, expected):
    """Each preset's zones get 4.6's lowmem_reserve rows, indexed by classzone."""
    assert expected == zone_table(machine.preset(name), "lowmem_reserve")


def test_large_managed_pages():
    """The large preset's zones manage 4096, 1044480, 3145728 and 0 pages."""
    assert (4096, 1044480, 3145728, 0) == zone_table(machine.preset("large"), "managed_pages")


@pytest.mark.parametrize(("name", "expected"), [
    # tiny: pcp_batch_override = 2 everywhere -> (12, 2)
    ("tiny", ((12, 2), (12, 2), (12, 2), (12, 2))),
    # small: DMA 4096 -> batch 0 -> (0, 1); DMA32 28672 -> 7 -> (42, 7); Normal 32768 -> 7;
    #        Movable 0 pages -> batch 0 -> (0, 1)
    ("small", ((0, 1), (42, 7), (42, 7), (0, 1))),
    # large: DMA (0, 1); DMA32 and Normal >= 512 MiB -> (186, 31); Movable (0, 1)
    ("large", ((0, 1), (186, 31), (186, 31), (0, 1))),
])
def test_preset_pcp(name, expected):
    """Each preset's zones get 4.6's pcp high and batch."""
    zones = machine.derive_zones(machine.preset(name))
    assert expected == tuple((zone.pcp_high, zone.pcp_batch) for zone in zones)


# -- THP's recommended min_free_kbytes --------------------------------------------------------

def test_thp_recommended_large():
    """THP recommends 67584 KiB for three populated zones when 5% of lowmem is larger."""
    # 512 * 3 * 2 + 512 * 3 * 3 * 3 = 3072 + 13824 = 16896 pages = 67584 KiB
    assert 67584 == machine.thp_recommended_min_free_kbytes(3, 4181822)


def test_thp_recommended_capped_at_five_percent():
    """THP's recommendation is capped at 5% of the pages above the high watermarks."""
    # 2 zones: 512*2*2 + 512*2*9 = 11264 pages; 5% of 129989 = 6499 pages -> 25996 KiB
    assert 25996 == machine.thp_recommended_min_free_kbytes(2, 129989)


def test_large_boot_wmarks_and_free_buffer_pages():
    """Before THP the large preset's watermarks come from 16384 KiB and leave 4181822 pages
    above the high marks."""
    # pages_min = 4096: DMA 4096*4096/4194304 = 4, delta max(1, 4) = 4 -> 4/8/12;
    # DMA32 4096*1044480/4194304 = 1020, delta max(255, 1044) = 1044 -> 1020/2064/3108;
    # Normal 3072, delta max(768, 3145) = 3145 -> 3072/6217/9362.
    # nr_free_buffer_pages = (4096-12) + (1044480-3108) + (3145728-9362) = 4181822.
    managed = (4096, 1044480, 3145728, 0)
    marks = machine.per_zone_wmarks(16384, managed, 10)
    highs = tuple(mark[2] for mark in marks)
    expected = (((4, 8, 12), (1020, 2064, 3108), (3072, 6217, 9362), (0, 0, 0)), 4181822)
    assert expected == (marks, machine.nr_free_buffer_pages(managed, highs))


def test_thp_512mib_machine_is_capped():
    """A 512 MiB machine boots at 2896 KiB and THP raises it only to the 5% cap, 25996 KiB."""
    # Zones DMA 4096, DMA32 126976.  Boot: int_sqrt(524288 * 16) = 2896, pages_min 724:
    # DMA 724*4096/131072 = 22, delta max(5, 4) = 5 -> high 32;
    # DMA32 724*126976/131072 = 701, delta max(175, 126) = 175 -> high 1051.
    # Free buffer pages (4096-32) + (126976-1051) = 129989; recommended 11264 pages, capped
    # at 129989/20 = 6499 pages = 25996 KiB.
    cfg = MachineConfig(name="m512", nr_pages=THP_MIN_PAGES_4_6, nr_cpus=1,
                        thp_min_free_kbytes=True)
    assert 25996 == machine.effective_min_free_kbytes(cfg)


def test_thp_not_applied_below_512mib():
    """THP start-up leaves min_free_kbytes alone on a machine below 512 MiB."""
    # hugepage_init returns before start_stop_khugepaged when totalram < 512 MiB:
    # 130816 pages = 523264 KiB -> int_sqrt(8372224) = 2893.
    cfg = MachineConfig(name="m511", nr_pages=130816, nr_cpus=1, thp_min_free_kbytes=True)
    assert 2893 == machine.effective_min_free_kbytes(cfg)


def test_explicit_min_free_kbytes_wins_over_formula():
    """A configured min_free_kbytes replaces init_per_zone_wmark_min's formula."""
    assert 4096 == machine.effective_min_free_kbytes(config(4096, min_free_kbytes=4096))


# -- presets name their departures from 4.6 ---------------------------------------------------

IDENTITY_FIELDS = {"name", "nr_pages", "nr_cpus", "customised"}


def defaults_4_6(cfg: MachineConfig) -> dict[str, object]:
    """What 4.6 itself would use for every tunable of a machine this size."""
    return {
        "dma_end_pfn": DMA_END_4_6,
        "dma32_end_pfn": DMA32_END_4_6,
        "min_free_kbytes": None,
        "thp_min_free_kbytes": cfg.nr_pages >= THP_MIN_PAGES_4_6,
        "watermark_scale_factor": 10,
        "percpu_pagelist_fraction": 0,
        "pcp_batch_override": None,
        "lowmem_reserve_ratio": (256, 256, 32),
    }


def test_defaults_cover_every_tunable():
    """The 4.6 defaults table names every MachineConfig field that is not identity."""
    fields = {field.name for field in attrs.fields(MachineConfig)} - IDENTITY_FIELDS
    assert set(defaults_4_6(config(1))) == fields


@pytest.mark.parametrize("name", ["tiny", "small", "large"])
def test_customised_names_exactly_the_departures(name):
    """A preset's ``customised`` keys are exactly the fields that differ from 4.6's defaults."""
    cfg = machine.preset(name)
    differing = {field for field, default in defaults_4_6(cfg).items()
                 if getattr(cfg, field) != default}
    assert differing == set(cfg.customised)


@pytest.mark.parametrize(("name", "expected"), [
    ("tiny", {"dma_end_pfn", "dma32_end_pfn", "pcp_batch_override"}),
    ("small", {"dma32_end_pfn"}),
    ("large", set()),
])
def test_customised_keys(name, expected):
    """Each preset documents the departures it is known to make."""
    assert expected == set(machine.preset(name).customised)


def test_invalid_preset_name():
    """An unknown preset name raises KeyError listing the known presets."""
    with pytest.raises(KeyError) as info:
        machine.preset("huge")
    assert "unknown preset 'huge'; known: tiny, small, large" == info.value.args[0]
