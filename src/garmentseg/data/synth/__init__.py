"""The synthetic studio: mannequin shots with retoucher cutouts, made procedurally, in the data contract.

A garment is a set of parameters drawn once (type, shape, fabric, colours, hard cases) and rendered in the
three views through a per-view camera (Front; FrontRight foreshortened with the far arm behind the body;
Back mirrored, without neckline or buttons). Shapes live in "body units": y runs from the top of the head
(0) to the soles (1), x from the centre line. Every garment draws from its own RNG seeded by
(seed, garment index), and the parent decides ids, types and hard cases, so a seed gives the same bytes
whatever the number of workers.

Hard cases (tags in `garments.csv` and the index, shares from `synth.hard_cases`):
- low_contrast: the garment colour is close to the mannequin finish or to the backdrop;
- complex_pattern: busy multi-colour prints (florals, leopard, camouflage, geometric) using the
  backdrop's and the mannequin's colours;
- dip_hem: a back layer hanging lower than the front, seen behind the legs in Front/FrontRight;
- noisy_truth: the cutout is wrong as in the real archive: the dip hem's back layer is missing from it,
  or it is a few pixels too thin under the arms.

Modules, in the order a garment passes through them: `garment` (the plan and the drawn parameters),
`shapes` (outlines in body units), `textures` (the fabric canvas), `scene` (studio and camera), `raster`
(drawing primitives), `render` (one garment in every view), `studio` (a batch on disk).
"""

from garmentseg.data.synth.garment import GARMENT_TYPES, HARD_CASES, GarmentSpec, plan_garments
from garmentseg.data.synth.render import render_garment
from garmentseg.data.synth.studio import SynthSummary, synthesize

__all__ = [
    "GARMENT_TYPES",
    "HARD_CASES",
    "GarmentSpec",
    "SynthSummary",
    "plan_garments",
    "render_garment",
    "synthesize",
]
