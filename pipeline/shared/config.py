"""Typed, validated parameters: one frozen model per `params.yaml` section.

`params.yaml` is the single source of truth; the defaults below mirror the shipped
file (tests/test_config.py fails if they drift). Unknown keys and bad values fail at
load with a one-line error naming the key, the value and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.shared.errors import PipelineError

SUPPORTED_SIZES = (32, 64, 96, 128)
Loss = Literal["bce", "lsgan", "wgan-gp", "hinge"]
Source = Literal["fashion-mnist", "folder", "konachan"]


def comma_list(value: Any) -> Any:
    """A CLI flag's "a,b,c" as a list (params.yaml gives lists already)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ParamsError(PipelineError, ValueError):
    """A params file or override that cannot be used; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class CrawlParams(_Section):
    source: Source = Field("fashion-mnist", description="Where images come from.")
    out: Path = Field(Path("data/raw"), description="Output folder (manifest.jsonl + shards or images/).")
    root: Optional[Path] = Field(Path("data/import"), description="Folder to import for source=folder (<root>/<label>/*.png); a DVC dep of the crawl stage.")
    limit: Optional[int] = Field(None, ge=1, description="Import at most this many images per split (embedded/folder sources).")
    seed: int = Field(0, description="Seed for any sampling the import does (e.g. which images `limit` keeps).")
    data_dir: Path = Field(Path("/usr/share/datasets/fashion-mnist"), description="Where Debian's dataset-fashion-mnist puts its .gz files.")
    # Moebooru (konachan-style) crawling.
    base_url: str = Field("https://konachan.net", description="Moebooru site to crawl.")
    tags: str = Field("", description="Tag search, space separated, as typed on the site.")
    pages: Optional[int] = Field(None, ge=1, description="Stop after this many list pages.")
    max_images: Optional[int] = Field(None, ge=1, description="Stop after keeping this many images.")
    start_page: int = Field(1, ge=1, description="First list page to fetch.")
    page_size: int = Field(100, ge=1, le=100, description="Posts per API page (the API allows at most 100).")
    rating: list[Literal["s", "q", "e"]] = Field(["s"], description="Ratings to keep (s=safe, q=questionable, e=explicit).")
    variant: Literal["preview", "sample", "jpeg", "file"] = Field("sample", description="Which image URL to download.")
    mode: Literal["api", "html"] = Field("api", description="Page through post.json (api) or the HTML post list (html).")
    workers: int = Field(4, ge=1, le=64, description="Parallel downloads.")
    delay: float = Field(1.0, ge=0, description="Minimum seconds between requests to one host, shared by all workers.")
    timeout: float = Field(30.0, gt=0, description="Connect and read timeout in seconds.")
    deadline: float = Field(600.0, gt=0, description="Total seconds one request may take, retries included (a server trickling bytes ends here).")
    max_page_bytes: int = Field(10_000_000, ge=1, description="Largest list page accepted, in decoded bytes (robots.txt: its first 500 KiB are used).")
    allow_hosts: list[str] = Field([], description="Hosts besides the board's own that images may come from ('.example.com' allows subdomains); known boards' image hosts are added.")
    retries: int = Field(4, ge=0, le=20, description="Retries on timeouts, connection errors, 429 and 5xx.")
    respect_robots: bool = Field(True, description="Honour robots.txt (turning it off logs a warning).")
    max_bytes: int = Field(50_000_000, ge=1, description="Largest download accepted, in bytes.")
    max_pixels: int = Field(40_000_000, ge=1, description="Largest image accepted, in pixels (decompression-bomb guard).")
    user_agent: str = Field("augment/0.1 (dataset crawler; +https://pypi.org/project/augment)", description="User-Agent header.")
    snapshot: str = Field("", description="Free text; change it to make `dvc repro` re-crawl a remote source.")

    @field_validator("rating", "allow_hosts", mode="before")
    @classmethod
    def _split_rating(cls, value: Any) -> Any:
        return comma_list(value)

    @model_validator(mode="after")
    def _folder_needs_root(self) -> "CrawlParams":
        if self.source == "folder" and self.root is None:
            raise ValueError("crawl.root is required when crawl.source is 'folder'")
        return self


class CropParams(_Section):
    mode: Literal["resize", "faces"] = Field("resize", description="resize: pad/resize whole images; faces: detect and crop anime faces.")
    input: Path = Field(Path("data/raw"), description="The crawl output folder to read.")
    out: Path = Field(Path("data/crop"), description="Output folder (shards, manifest.jsonl, preview.png).")
    metrics: Path = Field(Path("metrics/crop.json"), description="Counts written here (DVC metrics).")
    size: int = Field(32, description="Output side length in pixels (32, 64, 96 or 128).")
    channels: Literal["auto", 1, 3] = Field("auto", description="1 (grey), 3 (RGB) or auto (grey if every input is grey).")
    fit: Literal["pad", "stretch", "center-crop"] = Field("pad", description="How a non-square or differently sized image is fitted.")
    shard_size: int = Field(50_000, ge=1, description="Images per .npy shard.")
    seed: int = Field(0, description="Seed recorded in the outputs (and used by any random choice).")
    workers: int = Field(0, ge=0, description="Processes for face detection; 0 = all cores.")
    cache: Path = Field(Path("data/.crop-cache"), description="Face detections and crops kept between runs (outside `out`, which DVC deletes); safe to delete.")
    # faces mode
    margin: float = Field(0.3, ge=0, le=2, description="Margin around the face box, relative to its size.")
    pad_mode: Literal["reflect", "edge"] = Field("edge", description="Padding where the margin leaves the image.")
    min_likelihood: float = Field(0.5, ge=0, le=1, description="Drop detections below this likelihood.")
    min_face: int = Field(64, ge=1, description="Drop faces smaller than this (pixels in the source image).")
    max_faces_per_image: int = Field(4, ge=1, description="With keep: all, keep at most this many faces per image (the most likely, then the largest), after the other filters.")
    keep: Literal["best", "all"] = Field("best", description="Keep only the most likely face of an image (ties: the largest), or all.")
    min_source_side: int = Field(0, ge=0, description="Skip source images whose shorter side is smaller.")
    reject_monochrome: bool = Field(False, description="Drop crops with almost no colour (sketches, greyscale art).")
    dedup_hamming: int = Field(6, ge=-1, le=64, description="Across images: faces are reposts only if their images' perceptual hashes are within this many bits (-1 = no dedup).")
    dedup_max_diff: float = Field(13.0, ge=0, le=255, description="Across images: ...and their face regions, aligned, differ by at most this much (95th percentile of the per-pixel colour difference, 0-255).")
    dup_iou: float = Field(0.4, gt=0, le=1, description="Two faces in one image are one face detected twice when their boxes overlap by more than this IoU.")
    background: str = Field("white", description="Colour transparent pixels are composited onto before detection: a name (white, grey, black, ...) or #rrggbb.")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="Share of each class put in the test split, by a hash of the source image's md5 (0: keep the source's own split).")
    label_from: Literal["tags", "hair_color", "none", "source"] = Field("source", description="Where labels come from: the source's own labels, tags, hair colour or none.")
    tag_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "blonde_hair": "blonde", "blue_hair": "blue", "pink_hair": "pink", "brown_hair": "brown",
            "black_hair": "black", "white_hair": "white", "red_hair": "red", "green_hair": "green",
            "purple_hair": "purple", "silver_hair": "silver",
        },
        description="Tag -> label table for label_from=tags.")
    tag_policy: Literal["drop", "other"] = Field("drop", description="What to do with a post that has none or several mapped tags.")
    other_label: str = Field("other", description="Label used when tag_policy is 'other'.")
    hair_palette: dict[str, list[int]] = Field(
        default_factory=lambda: {
            "blonde": [240, 220, 130], "brown": [120, 80, 50], "black": [30, 30, 35], "blue": [70, 110, 220],
            "pink": [240, 150, 190], "red": [200, 40, 40], "white": [235, 235, 240], "green": [70, 170, 90],
            "purple": [140, 90, 190],
        },
        description="Named RGB colours for label_from=hair_color.")
    min_class_count: int = Field(0, ge=0, description="Classes with fewer images than this are handled by small_classes.")
    small_classes: Literal["drop", "merge"] = Field("drop", description="Drop small classes, or merge them into other_label.")

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        from PIL import ImageColor

        try:
            ImageColor.getrgb(value)
        except ValueError:
            raise ValueError("is not a colour (a name such as white or grey, or #rrggbb)") from None
        return value

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        from PIL import ImageColor

        return ImageColor.getrgb(self.background)[:3]  # type: ignore[return-value]

    @field_validator("size")
    @classmethod
    def _size_supported(cls, value: int) -> int:
        if value not in SUPPORTED_SIZES:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, SUPPORTED_SIZES))}")
        return value

    @model_validator(mode="after")
    def _hair_needs_faces(self) -> "CropParams":
        # Hair colour is measured in a band above a detected face; a resized whole image has none.
        if self.label_from == "hair_color" and self.mode != "faces":
            raise ValueError(f"crop.label_from: 'hair_color' needs crop.mode 'faces', not {self.mode!r} "
                             "(allowed with resize: 'source', 'tags' or 'none')")
        return self


DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")


def parse_diffaugment(policy: str) -> tuple[str, ...]:
    """"color,translation" -> ("color", "translation"); "" -> (); an unknown name raises ValueError."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [n for n in names if n not in DIFFAUGMENT_POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment policy {bad[0]!r}; allowed: {', '.join(DIFFAUGMENT_POLICIES)} (comma-separated)")
    return names


class TrainParams(_Section):
    input: Path = Field(Path("data/crop"), description="The crop output folder to train on.")
    out: Path = Field(Path("runs/train"), description="Checkpoints, sample grids and loss curves go here.")
    metrics: Path = Field(Path("metrics/train.json"), description="Final losses and timings (DVC metrics).")
    seed: int = Field(0, description="Seed for weights, data order and noise.")
    loss: Loss = Field("bce", description="GAN loss.")
    epochs: float = Field(3.5, gt=0, description="Passes over the training split; a fraction ends mid-epoch, rounded to a whole step (3.5 at lr 4e-4 keep the default run's CAS, gains and recall of 5 at 2e-4, 3 seeds; 4 add ~0.005 CAS: bench/RESULTS.md, \"Speed, fifth round\").")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many steps in total (the run can be resumed).")
    batch_size: int = Field(64, ge=2, description="Images per step.")
    z_dim: int = Field(64, ge=1, description="Latent size.")
    g_channels: int = Field(32, ge=4, description="Generator width (channels of its last hidden layer).")
    g_upsample: Literal["transposed", "resize"] = Field("transposed", description="How G doubles its side: transposed (DCGAN's 4x4 stride-2 transposed convolutions) or resize (nearest-neighbour x2, then a 3x3 convolution: no checkerboard; about 2.2x G's arithmetic).")
    g_z_norm: bool = Field(False, description="BigGAN's conditional batch norm on the latent too: z sets every batch norm's gain and bias in G (besides the class), the same at every position.")
    g_skip: bool = Field(False, description="StyleGAN2's skip output in G: every side also draws an RGB image (1x1 convolution), upsampled and summed into the output.")
    g_sle: bool = Field(False, description="FastGAN's skip-layer excitation in G (Liu et al. 2021): each side's feature map, pooled to 4x4, gates the channels of the side two doublings larger.")
    d_channels: int = Field(32, ge=4, description="Discriminator width (channels of its first layer).")
    embed_dim: int = Field(32, ge=1, description="Label embedding size fed to the generator.")
    lr_g: float = Field(4e-4, gt=0, description="Generator learning rate (Adam). The anime recipe keeps 2e-4, the rate it was measured at.")
    lr_d: float = Field(4e-4, gt=0, description="Discriminator learning rate (Adam).")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    d_steps: int = Field(1, ge=1, description="Discriminator steps per generator step.")
    reuse_fake: bool = Field(False, description="G's step reuses the last D step's fakes (and their noise), as the PyTorch DCGAN example does: one G forward a step fewer (1.07x the default GAN step), but on the anime recipe's faces one seed lost recall and variety (bench/RESULTS.md, \"Speed, third round\"); false: G's step draws fresh noise.")
    gp_weight: float = Field(10.0, ge=0, description="Gradient-penalty weight for wgan-gp.")
    r1_gamma: float = Field(0.0, ge=0, description="R1 penalty (Mescheder et al. 2018): gamma/2 x the squared gradient of D's logit with respect to real images, added to D's loss (0 = off).")
    r1_every: int = Field(4, ge=1, description="Apply R1 on every N-th step, scaled by N (lazy regularisation, StyleGAN2): the same penalty on average for 1/N of its cost.")
    lecam_weight: float = Field(0.0, ge=0, description="LeCam regulariser on D (Tseng et al. 2021, for limited data): this weight x the squared distance of D's real logits above the moving mean of its fake ones, and of its fake logits below that of its real ones (0 = off).")
    d_recon_weight: float = Field(0.0, ge=0, description="FastGAN's self-supervised D (Liu et al. 2021): decoders on D's last two feature maps redraw the real image and a quarter of it; this weight x their L1 error is added to D's loss (0 = off).")
    spectral_norm: bool = Field(False, description="Spectral normalisation in D instead of batch norm (wgan-gp uses neither).")
    mbstd_group: int = Field(4, ge=0, description="Minibatch-std group size in D against mode collapse (0 = off).")
    mbstd_by_class: bool = Field(True, description="Batches of one-class runs of mbstd_group images (real and generated), so minibatch-std sees the variety within a class, not between classes.")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="Decay of the generator EMA used for sampling.")
    ema_start: int = Field(200, ge=0, description="Copy G into the EMA until this step.")
    diffaugment: str = Field("", description="DiffAugment policies applied to every image D sees, real and generated (comma-separated: color, translation, cutout; \"\" = off). For a few thousand images or fewer, e.g. anime faces: translation,cutout (the anime recipe; color made its faces worse, docs/faces.md).")
    xflip: bool = Field(False, description="Mirror each real training image left-right with probability 0.5, drawn afresh every step (StyleGAN2-ADA's --mirror): twice the distinct images D sees, for data whose labels survive a mirror (faces, hair colour). Off by default (docs/faces.md measures it on anime faces).")
    diffaugment_groups: bool = Field(True, description="Draw DiffAugment's random parameters once per minibatch-std group (mbstd_group consecutive images) instead of per image, so minibatch-std still sees when G draws one image for every z (false: per image, as in the paper; on anime faces G then collapsed to one face per class).")
    ema_rampup: Optional[float] = Field(0.25, gt=0, description="The EMA's half-life is at most this share of the steps since ema_start (StyleGAN's ramp-up), so a short run samples from its recent G, not from G at ema_start; null: ema_decay from the start.")
    conditional: Literal["auto", "yes", "no"] = Field("auto", description="Condition on labels (auto: when the data has 2+ classes).")
    label_sampling: Literal["source", "balanced"] = Field("source", description="Labels of G's training samples: drawn with the training split's class frequencies (source), or uniformly (balanced).")
    checkpoint_every: int = Field(500, ge=1, description="Write a checkpoint every N steps (and at each epoch end).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32 (said once); the GAN and the label judge alike.")
    threads: int = Field(0, ge=0, description="CPU threads for torch (0 = all cores).")
    compile: bool = Field(False, description="torch.compile G and D (a minute of compiling; pays off on long GPU runs).")
    grid_per_class: int = Field(10, ge=1, le=32, description="Samples per class (row) in the epoch grids.")
    judge_steps: int = Field(1250, ge=0, description="Steps of the label judge, a small classifier of the real training split kept in the checkpoint for `generate.rank: filter` (0 = none).")
    judge_batch_size: int = Field(256, ge=2, description="Batch size of the label judge.")

    @field_validator("diffaugment")
    @classmethod
    def _known_policies(cls, value: str) -> str:
        return ",".join(parse_diffaugment(value))


class GenerateParams(_Section):
    checkpoint: Path = Field(Path("runs/train/checkpoint.pt"), description="Trained checkpoint to sample from.")
    out: Path = Field(Path("data/generated"), description="Output folder (images/<label>/seed<N>.png + manifest.jsonl).")
    count: int = Field(10_000, ge=1, description="Images to keep.")
    ranked: bool = Field(True, description="Rank candidates with the discriminator and keep the best.")
    oversample: int = Field(10, ge=1, description="Candidates drawn per kept image when ranked.")
    per_class: bool = Field(True, description="Rank within each class, to per-class quotas (class_distribution), rather than overall.")
    class_distribution: Literal["balanced", "source"] = Field("balanced", description="Per-class quotas: equal (balanced), or following the training split's class frequencies (source).")
    batch_size: int = Field(500, ge=1, description="Candidates per forward pass.")
    seed: int = Field(0, ge=0, description="First candidate seed; candidate i uses seed+i.")
    scores_only: bool = Field(False, description="Write the manifest of kept seeds and scores, but no images.")
    format: Literal["png", "npy"] = Field("png", description="png: one file per image; npy: uint8 shards (fast for DVC past ~50,000 images).")
    shard_size: int = Field(50_000, ge=1, description="Images per .npy shard when format is npy.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    threads: int = Field(0, ge=0, description="CPU threads for torch (0 = all cores).")
    writers: int = Field(1, ge=0, description="Processes encoding PNGs alongside generation (0 = in the main process).")
    # Selection rule when ranked (see pipeline/generate/ranking.py and docs/evaluate.md).
    rank: Literal["filter", "topk", "drs", "mh"] = Field("filter", description="filter: keep candidates the label judge recognises and D does not rank among its worst, in seed order; topk: the top D scores; drs: Discriminator Rejection Sampling; mh: Metropolis-Hastings (docs/evaluate.md).")
    min_confidence: float = Field(0.5, ge=0, le=1, description="filter: the label judge's least probability for the requested class.")
    d_floor: float = Field(30.0, ge=0, lt=100, description="filter: drop candidates whose D score is below this percentile of their class (0 = no D floor).")
    d_stats: Literal["generated", "running"] = Field("generated", description="D's batch-norm statistics when scoring: re-estimated on generated batches, as D saw fakes in training (generated), or the running averages of training (running).")
    latent_scale: float = Field(1.0, gt=0, description="Standard deviation of the latent z (above 1 trades fidelity for variety).")
    real: Path = Field(Path("data/crop"), description="Crop output whose test split holds the held-out real images that calibrate D (drs, mh).")
    calibration: Literal["logistic", "isotonic"] = Field("logistic", description="How D's logit is calibrated on held-out real and generated images (drs, mh).")
    calibration_samples: int = Field(1000, ge=2, description="Held-out real images (at most half the test split) and as many generated ones for calibration.")
    drs_gamma: float = Field(0.0, description="DRS shift gamma subtracted from F(x); used when drs_percentile is null.")
    drs_percentile: Optional[float] = Field(80.0, ge=0, le=100, description="Set the DRS gamma to this percentile of F(x) over held-out generated samples (null: use drs_gamma).")


class ExportParams(_Section):
    input: Path = Field(Path("data/generated"), description="The generate output folder.")
    real: Path = Field(Path("data/crop"), description="The crop output folder (for include_real).")
    out: Path = Field(Path("data/export"), description="ImageFolder-style dataset written here.")
    include_real: bool = Field(False, description="Also export the real training images, marked source=real.")
    format: Literal["imagefolder", "webdataset"] = Field("imagefolder", description="imagefolder: <id>_<label>/*.png (torchvision ImageFolder, Hugging Face imagefolder); webdataset: shard-*.tar of <key>.png/.cls/.json.")
    shard_size: int = Field(10000, ge=1, description="format=webdataset: samples per .tar shard.")
    seed: int = Field(0, description="Seed of the shuffled sample order in webdataset shards (each class spread evenly, so every shard holds every class); recorded in the dataset card.")


class EvaluateParams(_Section):
    export: Path = Field(Path("data/export"), description="The export to judge (its synthetic images).")
    real: Path = Field(Path("data/crop"), description="The crop output: real train split and held-out test split.")
    checkpoint: Path = Field(Path("runs/train/checkpoint.pt"), description="The model behind the export, for the ranking comparison.")
    out: Path = Field(Path("runs/evaluate"), description="Per-class CSVs, histograms, bar charts and sample grids go here.")
    metrics: Path = Field(Path("metrics/evaluate.json"), description="Headline numbers (DVC metrics).")
    seed: int = Field(0, description="First seed for classifier weights, data order, real subsets and candidate pools.")
    seeds: int = Field(3, ge=1, description="Repeat every measurement with this many seeds (seed, seed+1, ...); metrics are the mean, with <name>_std beside it.")
    steps: int = Field(300, ge=1, description="Training steps of each evaluation classifier (fixed, whatever the set size).")
    batch_size: int = Field(128, ge=2, description="Evaluation classifier batch size.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate (AdamW, warm-up then cosine decay) of the evaluation classifier.")
    feature_model: Literal["judge", "train"] = Field("judge", description="The classifier of all real training images whose features are the space of FD and precision/recall (and whose accuracy is real_accuracy_all). judge: the label judge in the checkpoint (train.judge_steps), the same CNN trained on the same real split, so not trained twice; train: trained here for feature_steps (also when the checkpoint has no judge, or one that learnt other images or fewer than feature_steps x batch_size; evaluate's notes say which).")
    feature_steps: int = Field(2500, ge=1, description="Steps of the classifier trained on all real training images when feature_model is train (or the checkpoint has no judge of this data).")
    fractions: list[float] = Field([0.01, 0.1], description="Real-data fractions for the augmentation gain (subset vs subset + synthetic).")
    gain_steps: int = Field(900, ge=1, description="Training steps of each augmentation-gain classifier, real subset and real + synthetic alike (the augmented set is ~3x larger than the largest one judged at `steps`, so it needs more steps to converge).")
    gain_real_epochs: Optional[float] = Field(30.0, gt=0, description="A gain's real-only arm stops after this many passes over its subset when that comes before gain_steps (never before `steps`): a small subset's accuracy is flat long before (600 images: the same at 300 and 900 steps, bench/RESULTS.md); null: gain_steps always.")
    gain_mixed_epochs: Optional[float] = Field(7.5, gt=0, description="A gain's mixed arm stops after this many passes over its distinct images (the real subset and the export) when that comes before gain_steps (never before `steps`): 600 real + 10,000 synthetic score the same after 600 and 900 steps, 6,000 + 10,000 need the 900 (bench/RESULTS.md); null: gain_steps always.")
    real_share: Optional[float] = Field(0.5, gt=0, lt=1, description="Share of the augmented training set that is real (the real subset is repeated to reach it); null: plain concatenation.")
    compare_rankings: bool = Field(True, description="Also judge sets chosen by each rule in `rules` from the same model and candidate pool.")
    rules: list[Literal["unranked", "filter", "topk", "drs", "mh"]] = Field(["unranked", "filter"], description="Selection rules to compare (also topk, drs, mh).")
    compare_count: Optional[int] = Field(2000, ge=10, description="Images in each compared set (null: as many as the export).")
    feature_samples: int = Field(2000, ge=10, description="Images per set for the Fréchet distance and precision/recall.")
    k: int = Field(3, ge=1, description="Nearest neighbour defining the manifolds of precision/recall (Kynkäänniemi et al. use 3).")
    inception_weights: Optional[Path] = Field(None, description="A torchvision InceptionV3 state dict; when set, FID/KID are also reported.")
    grid_per_class: int = Field(8, ge=1, le=32, description="Top- and bottom-ranked samples per class in the grids.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    cache: Optional[Path] = Field(Path("data/.evaluate-cache"), description="Results of the classifiers trained on real images alone (they do not depend on the export), kept between runs keyed by all they depend on; outside `out`, which DVC deletes; safe to delete; null = off.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="The classifiers' training precision. auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32.")
    workers: int = Field(0, ge=0, description="Processes training the classifiers side by side on a CPU, each on cores / workers threads (0 = one per usable core, at most 8 and no more than the classifiers; 1 = in this process, on `threads` threads). Results differ from a 1-worker run in the last digits only (thread count changes float sums).")
    threads: int = Field(0, ge=0, description="CPU threads for torch (0 = all cores).")

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, value: list[float]) -> list[float]:
        for f in value:
            if not 0 < f <= 1:
                raise ValueError(f"{f!r} is not in (0, 1]")
        return value

    @field_validator("fractions", "rules", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        return comma_list(value)


class ReportParams(_Section):
    export: Path = Field(Path("data/export"), description="The export to show (its images, manifest and dataset card).")
    generated: Path = Field(Path("data/generated"), description="The generate output (its score histogram and meta.json).")
    real: Path = Field(Path("data/crop"), description="The crop output: real training images shown beside the exported ones.")
    train: Path = Field(Path("runs/train"), description="The train output: loss curves and the checkpoint whose sha256 is shown.")
    evaluate: Path = Field(Path("runs/evaluate"), description="The evaluate output folder (per-class CSVs, plots, params.json).")
    metrics: Path = Field(Path("metrics/evaluate.json"), description="evaluate's metrics (CAS, gains, FD, precision, recall, rules, notes).")
    out: Path = Field(Path("runs/report"), description="The report is written here as index.html, images inline (no network needed).")
    per_class: int = Field(8, ge=1, le=64, description="Images per class in each grid, exported and real alike.")
    seed: int = Field(0, description="Seed choosing which images the grids show.")


SECTIONS: dict[str, type[_Section]] = {
    "crawl": CrawlParams,
    "crop": CropParams,
    "train": TrainParams,
    "generate": GenerateParams,
    "export": ExportParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
}
S = TypeVar("S", bound=_Section)


def _format_error(section: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join([section, *(str(p) for p in first["loc"])]) if first["loc"] else section
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(SECTIONS[section].model_fields)
        return f"{key}: unknown key (allowed: {allowed})"
    if first["type"] == "literal_error":
        allowed = first.get("ctx", {}).get("expected", "")
        return f"{key}: {first['input']!r} is not allowed (allowed: {allowed})"
    msg = first["msg"].removeprefix("Value error, ")
    if msg.startswith(f"{section}."):  # a cross-field rule that names its own key
        return msg
    if first["loc"]:
        return f"{key}: {first['input']!r}: {msg}"
    return f"{section}: {msg}"


def parse_section(section: str, values: dict[str, Any] | None) -> _Section:
    """Validate one section's raw values into its model, raising ParamsError on bad input."""
    if section not in SECTIONS:
        raise ParamsError(f"unknown params section {section!r} (allowed: {', '.join(SECTIONS)})")
    try:
        return SECTIONS[section].model_validate(values or {})
    except ValidationError as err:
        raise ParamsError(_format_error(section, err)) from None


def read_params_file(path: Path) -> dict[str, Any]:
    """Read the whole params file; a missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section {unknown[0]!r} (allowed: {', '.join(SECTIONS)})")
    return data


def load_section(path: Path, section: str, overrides: dict[str, Any] | None = None) -> Any:
    """Load `section` from the params file at `path`, with non-None `overrides` applied on top."""
    raw = dict(read_params_file(path).get(section) or {})
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_section(section, raw)


def to_jsonable(params: BaseModel) -> dict[str, Any]:
    """The resolved params as plain JSON types, for metadata files and checkpoints."""
    return params.model_dump(mode="json")


def field_help(model: type[BaseModel], name: str) -> tuple[str, str]:
    """(description, default as text) of one field, for CLI help."""
    field = model.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if isinstance(default, list):
        default = ",".join(map(str, default))
    return field.description or "", "none" if default is None else str(default)


def allowed_values(model: type[BaseModel], name: str) -> tuple[Any, ...]:
    """The Literal choices of a field, an Optional Literal's included ((), if it is not a Literal).

    Only a Literal's arguments are choices: an Optional[int]'s are its types, not values to list.
    """
    annotation = model.model_fields[name].annotation
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return tuple(v for arg in get_args(annotation) if get_origin(arg) is Literal for v in get_args(arg))
