"""The batch expectation suite: one Great Expectations expectation per check, thresholds from params.yaml.

Each `CheckSpec` names the metadata column it reads, the rule in words, the GX expectation that enforces
it and how to word a finding for one failing row. GX decides which files fail (`unexpected_index_list`
with the file column as index); the spec words the finding from that file's row.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from garmentseg.config import Config, ConfigError
from garmentseg.locks import exclusive
from garmentseg.validation.datadocs import make_self_contained

log = logging.getLogger(__name__)

SUITE_NAME = "garment_batch"
DATASOURCE = "garmentseg"
ASSET = "batch_metadata"
SITE_NAME = "garmentseg"
DOCS_DIR = "data_docs"
INDEX_COLUMN = "file"
BATCH_FILE = "."  # a finding about the batch as a whole

Row = dict[str, Any]


@dataclass(frozen=True)
class CheckSpec:
    """One check: the expectation GX runs and how a failing row becomes a finding."""

    check: str
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    rule: str
    severity: str = "error"  # error | warning
    message: Callable[[Row], str] = field(default=lambda _row: "", compare=False)

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")


def _num(row: Row, key: str) -> float:
    value = row.get(key)
    return float("nan") if value is None or pd.isna(value) else float(value)


def build_checks(cfg: Config, source_name: str | None = None) -> list[CheckSpec]:
    """The checks a batch from `source_name` (default cfg.data.source) must pass, with their thresholds."""
    name = source_name or cfg.data.source
    src = cfg.sources[name]
    v = cfg.validation
    specs = [
        CheckSpec(
            "batch_not_empty",
            "ExpectTableRowCountToBeBetween",
            {"min_value": 1},
            "a batch delivers at least one file",
            message=lambda _row: "batch has no files in raw/ or cutouts/",
        ),
        CheckSpec(
            "layout",
            "ExpectColumnValuesToBeNull",
            {"column": "layout_error"},
            "a batch holds raw/ and cutouts/ with files only",
            message=lambda r: r["layout_error"],
        ),
        CheckSpec(
            "file_name",
            "ExpectColumnValuesToBeNull",
            {"column": "name_error"},
            f"file names are <garment_uuid>_<View>.png with View in {', '.join(src.views)}",
            message=lambda r: r["name_error"],
        ),
        CheckSpec(
            "duplicate",
            "ExpectColumnValuesToBeNull",
            {"column": "duplicate_of"},
            "each garment/view is delivered once per side",
            message=lambda r: f"duplicate of {r['duplicate_of']}",
        ),
        CheckSpec(
            "os_junk",
            "ExpectColumnValuesToBeNull",
            {"column": "os_junk"},
            "files an operating system leaves beside a delivery (.DS_Store, Thumbs.db, ._*) are ignored",
            severity="warning",
            message=lambda r: f"{r['os_junk']}: not part of the delivery; ignored and never ingested",
        ),
        CheckSpec(
            "duplicate_shot",
            "ExpectColumnValuesToBeNull",
            {"column": "same_shot_as"},
            "each shot is delivered once, under one garment and view (in the batch and the dataset)",
            message=lambda r: (
                f"the same shot as {r['same_shot_as']}: one picture under two garment ids or views would "
                "land in two splits"
            ),
        ),
        CheckSpec(
            "near_duplicate_shot",
            "ExpectColumnValuesToBeNull",
            {"column": "near_duplicate_of"},
            f"no two shots are the same picture re-exported (dHash within {v.near_duplicate_bits} bits "
            f"and mean garment difference <= {v.near_duplicate_max_diff:g})",
            severity="warning",
            message=lambda r: f"looks like the same picture as {r['near_duplicate_of']}: one garment twice?",
        ),
        CheckSpec(
            "garment_id_reused",
            "ExpectColumnValuesToBeNull",
            {"column": "replaces_picture"},
            "a garment and view already in the dataset come back only as the same picture (a correction)",
            message=lambda r: (
                f"the dataset holds another picture under this garment id and view ({r['replaces_picture']}): "
                "ingesting it would replace that pair; a correction keeps the shot, another garment needs its "
                "own id (a studio that re-shoots can list garment_id_reused in the source's warn_only)"
            ),
        ),
        CheckSpec(
            "paired",
            "ExpectColumnValuesToBeNull",
            {"column": "partner_missing"},
            "every shot has exactly one cutout and every cutout one shot",
            message=lambda r: r["partner_missing"],
        ),
        CheckSpec(
            "file_size",
            "ExpectColumnValuesToBeNull",
            {"column": "file_size_error"},
            f"files hold 1 to {v.max_file_bytes:,} bytes",
            message=lambda r: r["file_size_error"],
        ),
        CheckSpec(
            "format",
            "ExpectColumnValuesToBeInSet",
            {"column": "format", "value_set": ["png"]},
            "file content is PNG (magic bytes), whatever the name says",
            message=lambda r: (
                f"content is {str(r['format']).upper()} ({r['colour_mode'] or 'unreadable header'}), not PNG"
                + (", under a .png name" if str(r["file"]).endswith(".png") else "")
                if r["format"] != "unknown"
                else "content is not an image (magic bytes match neither PNG nor JPEG)"
            ),
        ),
        CheckSpec(
            "max_pixels",
            "ExpectColumnValuesToBeBetween",
            {"column": "pixels", "min_value": 1, "max_value": v.max_pixels},
            f"header width x height <= {v.max_pixels:,} pixels (checked before decoding)",
            message=lambda r: (
                f"header claims {r['header_size']} = {int(_num(r, 'pixels')):,} pixels, over "
                f"the limit of {v.max_pixels:,}; refused before decoding (decompression bomb)"
            ),
        ),
        CheckSpec(
            "decodable",
            "ExpectColumnValuesToBeNull",
            {"column": "decode_error"},
            "the PNG decodes completely (not truncated or corrupt)",
            message=lambda r: r["decode_error"],
        ),
    ]
    if src.exact_size:
        w, h = src.exact_size
        specs.append(
            CheckSpec(
                "resolution",
                "ExpectColumnValuesToBeInSet",
                {"column": "size", "value_set": [f"{w}x{h}"]},
                f"every image is {w}x{h} (source {name})",
                message=lambda r: f"{r['size']}, source {name} expects {w}x{h}",
            )
        )
    else:
        for dim, lo, hi in (
            ("width", src.min_width, src.max_width),
            ("height", src.min_height, src.max_height),
        ):
            specs.append(
                CheckSpec(
                    "resolution",
                    "ExpectColumnValuesToBeBetween",
                    {"column": dim, "min_value": lo, "max_value": hi},
                    f"{dim} within {lo}..{hi} px (source {name})",
                    message=lambda r, dim=dim, lo=lo, hi=hi: (
                        f"{r['size']}: {dim} outside {lo}..{hi} (source {name})"
                    ),
                )
            )
        if src.aspect is not None:
            lo, hi = src.aspect - src.aspect_tolerance, src.aspect + src.aspect_tolerance
            specs.append(
                CheckSpec(
                    "resolution",
                    "ExpectColumnValuesToBeBetween",
                    {"column": "aspect", "min_value": lo, "max_value": hi},
                    f"width/height within {src.aspect:g} ± {src.aspect_tolerance:g} (source {name})",
                    message=lambda r, lo=lo, hi=hi: (
                        f"{r['size']}: aspect {_num(r, 'aspect'):.3f} outside "
                        f"{lo:.3f}..{hi:.3f} (source {name})"
                    ),
                )
            )
    specs += [
        CheckSpec(
            "colour_mode",
            "ExpectColumnValuesToBeNull",
            {"column": "colour_mode_error"},
            "shots are 8-bit RGB or RGBA, cutouts 8-bit RGBA (PNG colour type and bit depth)",
            message=lambda r: (
                f"{'cutout' if r['side'] == 'cutouts' else 'shot'} is {r['colour_mode_error']}; the contract "
                "requires 8-bit RGB or RGBA"
            ),
        ),
        CheckSpec(
            "pair_size",
            "ExpectColumnValuesToBeInSet",
            {"column": "pair_size_match", "value_set": [True]},
            "a cutout has the size of its shot",
            message=lambda r: f"cutout is {r['size']}, its shot {r['partner_size']}: a pair has one size",
        ),
        CheckSpec(
            "alpha_channel",
            "ExpectColumnValuesToBeInSet",
            {"column": "has_alpha", "value_set": [True]},
            "a cutout is RGBA: its alpha channel is the garment mask",
            message=lambda r: (
                f"cutout has no alpha channel ({int(_num(r, 'channels'))} channels); the "
                "contract requires RGBA"
            ),
        ),
        CheckSpec(
            "alpha_binary",
            "ExpectColumnValuesToBeBetween",
            {"column": "alpha_partial_share", "min_value": 0, "max_value": v.alpha_partial_max_share},
            f"at most {v.alpha_partial_max_share:.1%} of pixels partially transparent (0 < alpha < 255)",
            message=lambda r: (
                f"{_num(r, 'alpha_partial_share'):.1%} of pixels are partially transparent, "
                f"limit {v.alpha_partial_max_share:.1%}: the alpha is not a near-binary mask"
            ),
        ),
        CheckSpec(
            "mask_area",
            "ExpectColumnValuesToBeBetween",
            {"column": "garment_fraction", "min_value": v.mask_area_min, "max_value": v.mask_area_max},
            f"garment covers {v.mask_area_min:.0%}..{v.mask_area_max:.0%} of the frame (alpha >= 128)",
            message=lambda r: _mask_area_message(
                _num(r, "garment_fraction"), v.mask_area_min, v.mask_area_max
            ),
        ),
        CheckSpec(
            "alpha_inverted",
            "ExpectColumnValuesToBeBetween",
            {"column": "border_opaque_share", "min_value": 0, "max_value": v.alpha_inverted_border_share},
            f"at most {v.alpha_inverted_border_share:.0%} of the frame's outermost pixels are opaque",
            message=lambda r: (
                f"alpha looks inverted: {_num(r, 'border_opaque_share'):.0%} of the frame's border is "
                f"opaque (limit {v.alpha_inverted_border_share:.0%}); the backdrop is kept and the "
                "garment cut away"
            ),
        ),
        CheckSpec(
            "rgb_match",
            "ExpectColumnValuesToBeBetween",
            {"column": "rgb_diff", "min_value": 0, "max_value": v.cutout_rgb_max_diff},
            f"cutout RGB equals the shot's under the opaque mask (mean |diff| <= {v.cutout_rgb_max_diff:g})",
            message=lambda r: (
                f"cutout RGB differs from its shot by {_num(r, 'rgb_diff'):.1f} on average under "
                f"the mask (limit {v.cutout_rgb_max_diff:g}): a cutout of another garment or view?"
            ),
        ),
        CheckSpec(
            "contrast",
            "ExpectColumnValuesToBeBetween",
            {"column": "contrast", "min_value": v.contrast_min},
            f"mean colour distance across the mask edge >= {v.contrast_min:g} (RGB units, 0-441)",
            message=lambda r: (
                f"colour distance across the mask edge is {_num(r, 'contrast'):.1f}, floor "
                f"{v.contrast_min:g}: the garment is hard to separate from its surroundings"
            ),
        ),
        CheckSpec(
            "edge_alignment",
            "ExpectColumnValuesToBeBetween",
            {"column": "edge_alignment", "min_value": v.edge_alignment_min},
            f"the mask edge follows the shot's edges (alignment >= {v.edge_alignment_min:g})",
            message=lambda r: (
                f"mask edge alignment {_num(r, 'edge_alignment'):.2f}, floor {v.edge_alignment_min:g}: the "
                "mask fits the shot better moved elsewhere; shifted, or taken from another shot?"
            ),
        ),
    ]
    if src.mask_free_sides:
        sides = "|".join(src.mask_free_sides)
        specs.append(
            CheckSpec(
                "mask_border",
                "ExpectColumnValuesToNotMatchRegex",
                {"column": "mask_touches", "regex": rf"\b(?:{sides})\b"},
                f"the mask never reaches the frame's {', '.join(src.mask_free_sides)} (source {name})",
                message=lambda r: (
                    f"mask reaches the frame's {r['mask_touches']} side(s); source {name} frames the whole "
                    f"garment, away from the {', '.join(src.mask_free_sides)}"
                ),
            )
        )
    if src.require_all_views:
        specs.append(
            CheckSpec(
                "views",
                "ExpectColumnValuesToBeInSet",
                {"column": "present", "value_set": [True]},
                f"each garment has all views ({', '.join(src.views)})",
                severity="warning",
                message=lambda r: (
                    f"garment {r['garment_id']} has no {r['view']} view (neither shot nor cutout); "
                    f"source {name} delivers {', '.join(src.views)}"
                ),
            )
        )
    unknown = set(src.warn_only) - {spec.check for spec in specs}
    if unknown:
        raise ConfigError(
            f"sources.{name}.warn_only names {', '.join(sorted(unknown))}, which are not checks of this "
            f"source; checks: {', '.join(spec.check for spec in specs)}"
        )
    return [replace(spec, severity="warning") if spec.check in src.warn_only else spec for spec in specs]


def _mask_area_message(fraction: float, lo: float, hi: float) -> str:
    what = (
        "mask is empty" if fraction == 0 else "mask is full" if fraction == 1 else "garment area out of range"
    )
    return f"{what}: garment covers {fraction:.1%} of the frame, expected {lo:.0%}..{hi:.0%}"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One GX writer at a time on the shared project and Data Docs site (two batches may land together)."""
    with exclusive(folder / ".gx.lock"):
        yield


@dataclass(frozen=True)
class SuiteRun:
    """What GX said: per-check unexpected files, and where the Data Docs pages are."""

    success: bool
    failures: list[tuple[CheckSpec, list[str]]]  # spec -> failing file names ("." for the batch)
    data_docs_index: Path
    data_docs_page: Path | None


def run_suite(frame: pd.DataFrame, specs: list[CheckSpec], reports_dir: Path, run_name: str) -> SuiteRun:
    """Validate the metadata table with a GX checkpoint and update the batch Data Docs site."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    docs_dir = reports_dir / DOCS_DIR
    with _locked(reports_dir):
        context = gx.get_context(mode="file", project_root_dir=reports_dir)
        if SITE_NAME not in context.get_site_names():
            context.add_data_docs_site(
                SITE_NAME,
                {
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir),
                    },
                },
            )
            if "local_site" in context.get_site_names():
                context.delete_data_docs_site("local_site")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            context.variables.save()
        source = context.data_sources.add_or_update_pandas(DATASOURCE)
        asset = source.add_dataframe_asset(ASSET)
        batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        suite = gx.ExpectationSuite(
            name=SUITE_NAME, notes="garmentseg batch contract: one expectation per check"
        )
        for spec in specs:
            suite.add_expectation(
                getattr(gxe, spec.expectation)(
                    **spec.kwargs,
                    meta={"check": spec.check},
                    notes=f"**{spec.check}**: {spec.rule}",
                    severity="critical" if spec.severity == "error" else "warning",
                )
            )
        suite = context.suites.add_or_update(suite)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=SUITE_NAME, data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=SUITE_NAME,
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [INDEX_COLUMN]},
            )
        )
        result = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
        )
        (identifier, validation), *_ = result.run_results.items()
        urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name=SITE_NAME)
        make_self_contained(docs_dir)
    page = _url_to_path(urls[0]["site_url"]) if urls and urls[0].get("site_url") else None
    failures = []
    for outcome in validation.results:
        config = outcome.expectation_config
        spec = _spec_for(specs, config)
        if outcome.success:
            continue
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            raise RuntimeError(f"GX could not evaluate check {spec.check}: {outcome.exception_info}")
        files = [str(item[INDEX_COLUMN]) for item in outcome.result.get("unexpected_index_list") or []]
        failures.append((spec, files or [BATCH_FILE]))
    return SuiteRun(bool(result.success), failures, docs_dir / "index.html", page)


def _spec_for(specs: list[CheckSpec], config: Any) -> CheckSpec:
    """The spec an expectation result came from (same check name and same column)."""
    check, column = config.meta.get("check"), config.kwargs.get("column")
    return next(s for s in specs if s.check == check and s.column == column)


def _url_to_path(url: str) -> Path:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(url).path))
