"""Default values shared by the library, the CLI and the bundles (one place for each number)."""

from __future__ import annotations

#: Seed used when the user gives none.
SEED = 0

# --- embedded cohort -------------------------------------------------------------------------------------
#: Sites, subjects per site and cubic shape of the embedded cohort made by ``harmonize synth``.
SYNTH_SITES = 4
SYNTH_SUBJECTS_PER_SITE = 40
SYNTH_SHAPE = 64

# --- preprocessing ---------------------------------------------------------------------------------------
#: Isotropic voxel size (mm) after resampling, and the shape after crop/pad (voxels).
TARGET_SPACING = 2.0
TARGET_SHAPE = (96, 112, 96)

# --- unlearning ------------------------------------------------------------------------------------------
#: Weight of the confusion loss (Dinsdale et al. use 10 with a summed loss).
BETA = 10.0
#: Gradient-reversal strength of the DANN baseline (``reversal_weight``; Ganin & Lempitsky's schedule ends at 1;
#: why not 10: docs/unlearning.md).
DANN_REVERSAL_WEIGHT = 1.0
#: Weight of the domain loss.
ALPHA = 1.0

# --- manifests -------------------------------------------------------------------------------------------
#: Fractions of each site's participants put in the validation and test splits by ``manifest from-bids``.
MANIFEST_VAL_FRACTION = 0.15
MANIFEST_TEST_FRACTION = 0.15

# --- per-site intensity standardisation (harmonize preprocess) --------------------------------------------
#: Quantiles of the foreground intensities mapped by histogram standardisation (Nyul & Udupa's pc1, pc2).
LANDMARKS_CUTOFF = (0.01, 0.99)

# --- data loading ----------------------------------------------------------------------------------------
#: Scans per batch when the caller gives no batch size.
BATCH_SIZE = 8

# --- training augmentation (harmonize.handlers.RandomRigidAugmentation) ----------------------------------
#: Spatial axes mirrored at random (0: left-right in RAS-oriented scans), and the largest random rotation about
#: each axis (degrees) and shift along each axis (voxels) of a training batch (why: docs/unlearning.md).
AUGMENT_FLIP_AXES = (0,)
AUGMENT_ROTATION_DEG = 15.0
AUGMENT_SHIFT_VOXELS = 2.0

# --- ridge regressions (the age probe, the erasure's age model, the re-fitted output layer) ------------------
#: Penalties searched by generalised (leave-one-out) cross-validation: 10^-3 .. 10^3, two per decade.
RIDGE_ALPHAS = tuple(10.0 ** (k / 2) for k in range(-6, 7))

# --- networks (Dinsdale et al. 2021) ---------------------------------------------------------------------
#: Channels of the age regressor's convolution blocks, its feature size and regressor width (96-32-1).
AGE_CHANNELS = (32, 64, 64, 96, 96, 96)
AGE_FEATURE_DIM = 96
AGE_HIDDEN = 32
#: Normalisation of the age regressor (MONAI spec). BatchNorm, as in the paper: GroupNorm and InstanceNorm
#: normalise every scan's activations on their own, which removes the global tissue proportions that carry
#: atrophy (measurements: docs/unlearning.md).
AGE_NORM = "batch"
#: Activation of every layer of the age regressor (MONAI spec).
AGE_ACT: str | tuple = ("leakyrelu", {"negative_slope": 0.01})
#: Classes (background, CSF, GM, WM) and channels per level of the tissue segmenter.
SEG_CLASSES = 4
SEG_CHANNELS = (8, 16, 32, 64)
#: Hidden width and dropout of the domain head (the paper's 96-32-n head, p = 0.2).
DOMAIN_HIDDEN = 32
DOMAIN_DROPOUT = 0.2

# --- domain heads and training (workflows) ---------------------------------------------------------------
#: Learning rate and updates per batch of the domain heads (a strong adversary makes strong unlearning).
HEAD_LR = 1e-3
HEAD_STEPS = 1
#: Epochs at the start of training during which only the domain heads learn.
WARMUP_EPOCHS = 2
#: Quantile bins of the head of a continuous confound such as age.
AGE_BINS = 4
#: Learning rate of the task network.
LEARNING_RATE = 1e-3
#: Learning rate of the per-epoch full-batch re-fit of the domain heads (``head_refit_steps``).
HEAD_REFIT_LR = 1e-2
#: The re-fit recipe (``UnlearningSettings.refit_adversary``; its measurements: docs/unlearning.md, "Does it
#: work?"): a linear head re-fitted from scratch each epoch with 300 full-batch steps, nearly frozen in between
#: (lr 1e-4), confusion weight 1, after 4 warm-up epochs.
REFIT_STEPS = 300
REFIT_HEAD_LR = 1e-4
REFIT_BETA = 1.0
REFIT_WARMUP_EPOCHS = 4
#: ... and it goes on while the epoch's standardised age loss is at or above this (1 = predicting the mean age), so
#: the adversary never starts before the task is learnt.
REFIT_WARMUP_UNTIL_LOSS = 0.7
#: ... and it unlearns a confound only if, after the warm-up, a cross-validated probe reads it from the training
#: features at least this far (balanced accuracy) beyond age and sex (harmonize.handlers.EvidenceGate).
REFIT_EVIDENCE_MARGIN = 0.05
#: Weight of the agreement between sites at the same age in the biased designs' age loss (``SiteAgreementLoss``;
#: chosen on the efficacy benchmark's biased cohort: docs/unlearning.md, session 13).
SITE_AGREEMENT = 2.0
#: Width (years) of the age bins in which ``SiteAgreementLoss`` compares the sites.
SITE_AGREEMENT_AGE_BIN = 5.0
#: How far each batch moves ``SiteAgreementLoss``'s running means.
SITE_AGREEMENT_MOMENTUM = 0.1
#: A standardised age loss at or above this in the last training epoch (1 = predicting the mean age): the network
#: learnt little age, which an adversary that wins before the task is learnt can cause (see docs/unlearning.md).
TASK_NOT_LEARNT_LOSS = 0.9
#: After an unlearning epoch that ended at that loss (the adversary took the task), the network goes back to the last
#: epoch with the task learnt and the confusion weights are multiplied by this (harmonize.handlers.TaskCollapseGuard).
COLLAPSE_WEIGHT_FACTOR = 0.5

# --- demo ------------------------------------------------------------------------------------------------
#: What the demo's networks see: 32^3 voxels of 6 mm (the whole head of the 64^3 cohort, downsampled).
DEMO_SHAPE = (32, 32, 32)
DEMO_SPACING = 6.0
#: Brain-age encoder channels of the demo (a slimmer, five-block VGG than the paper's, for 2 CPU cores; the first
#: two blocks, at full resolution, cost most, hence their 8 and 16 channels: docs/audit.md, "Speed choices").
DEMO_CHANNELS = (8, 16, 32, 64, 64)
DEMO_EPOCHS = 15
#: Layers of the brain-age network that are unlearned and audited: the feature vector (the paper's bottleneck) and
#: the regressor's hidden layer (the last before the output), i.e. what the age head reads; why not an earlier
#: block: docs/unlearning.md (session 8).
AGE_TAPS = ("encoder", "regressor.act")
#: Sites of the demo's cohort: the last one is kept out of training as an unseen scanner, so 4 are trained on.
DEMO_SITES = 5
#: Subjects per site of the demo's (and the efficacy benchmark's) cohort and the share held out of training: 28
#: per site train, 32 are audited (the probe's standard error at these sizes: docs/unlearning.md).
DEMO_SUBJECTS_PER_SITE = 60
DEMO_HELD_OUT_FRACTION = 32 / 60
#: Seeds each of the demo's methods trains on (means, 95 % intervals and paired p-values need several), training
#: runs at once (one per core), and label permutations of each site probe's p-value: none, since the paired
#: comparisons over seeds carry the verdict and the permutations cost time (their share of a run: docs/audit.md,
#: "Speed choices"; ``harmonize compare --permutations N`` gives them).
DEMO_SEEDS = 3
DEMO_JOBS = 2
DEMO_PERMUTATIONS = 0
#: Fraction of a site's age window shared with the next site's in the demo's biased scenario (only neighbouring
#: sites share ages, as in a cohort pooled from studies of different age groups).
DEMO_BIASED_OVERLAP = 0.5
#: Share of the held-out subjects in the val split (the rest are test; both are audited).
DEMO_HELD_OUT_VAL_SHARE = 0.375

# --- reconstruction unlearning (Xue et al., "Erase to Enhance") ------------------------------------------
#: Slice side (pixels) of the embedded reconstruction experiment.
RECON_SIZE = 64
#: Cartesian undersampling: acceleration R and fully sampled centre fraction (fastMRI: 0.08 at R=4).
RECON_ACCELERATION = 4.0
RECON_CENTER_FRACTION = 0.08
#: SSIM window side and L1 weight of the reconstruction loss (the paper: 7 x 7 and 1e-5).
RECON_SSIM_WINDOW = 7
RECON_L1_WEIGHT = 1e-5
#: Fraction of the retain set used by the FT variants (the paper: 10 %; 30 % here, chosen by the sweeps in
#: docs/reconstruction.md, where smaller fractions could not keep the retain PSNR while forgetting within the time
#: budget).
RECON_RETAIN_FRACTION = 0.3
#: Weight of GA-L1's L1 penalty on the weights (sum of absolute values), and NL's noise standard deviation.
RECON_L1_PENALTY = 1e-5
RECON_NOISE_STD = 1.0
#: Unlearning schedule of the embedded experiment (sweeps in docs/reconstruction.md, "Over seeds"): epochs of the
#: forget stage (GA / GA-L1 / NL; the paper: 5), of the FT stage, and the Adam learning rate of GA stages.
RECON_FORGET_EPOCHS = 3
RECON_FT_EPOCHS = 5
RECON_GA_LEARNING_RATE = 1e-3
#: Per-sample ceiling of the SSIM + L1 loss under gradient ascent (0.9: SSIM 0.1, below the oracle's SSIM on the
#: forget set, so that the FT stage that follows brings the forget PSNR back up to about the oracle's; measured in
#: docs/reconstruction.md), and the weight of retain samples that share the forget stage's batches (descent on them
#: while ascending).
RECON_LOSS_CEILING = 0.9
RECON_RETAIN_WEIGHT = 1.0
#: Seeds of the reconstruction experiment (each trains its own original and oracle; means and 95 % intervals
#: need several: one seed's figures differ from the next's by as much as the best settings do, docs/reconstruction.md).
RECON_SEEDS = 3

# --- audit and comparison (harmonize audit / compare) ----------------------------------------------------
#: Empirical Bayes in the ComBat baseline on a network's features: off. EB shrinks every feature's site effect
#: towards the mean over features, which suits many similar measures (regional volumes) but not a network's few
#: strongly correlated features (measurements: docs/audit.md, "ComBat on network features").
COMBAT_FEATURES_EB = False
#: Label permutations of the site probe's permutation test (p-value floor 1 / (n + 1), about 0.01).
PROBE_PERMUTATIONS = 100

# --- training checkpoints (harmonize.handlers.TrainingCheckpoint) ----------------------------------------
#: Checkpoints kept in a training's checkpoint folder (older ones are deleted after each save).
CHECKPOINT_KEEP = 3

# --- progress (harmonize.progress) -----------------------------------------------------------------------
#: When the output is not a terminal, a loop over scans or subjects logs one line per this many items (and at
#: the end), and training logs one line per epoch, instead of a live bar.
PROGRESS_EVERY = 100

# --- ranges of numeric options (harmonize.cli.options: one rule for every subcommand) ---------------------
#: Largest seed (numpy's seeds are 32-bit), permutation count, epoch count, worker count, and the isotropic voxel
#: size (mm) accepted by ``preprocess --spacing`` (a finer spacing is checked against the memory per scan).
MAX_SEED = 2**32 - 1
MAX_PERMUTATIONS = 100_000
MAX_EPOCHS = 100_000
MAX_JOBS = 1024
#: Largest number of seeds a comparison trains each method on.
MAX_SEEDS = 1000
MAX_SPACING = 20.0
#: Largest axis of ``preprocess --shape`` (voxels).
MAX_SHAPE = 1024
#: Largest channel count of one encoder block and largest number of blocks (each block halves the scan).
MAX_CHANNELS = 4096
MAX_BLOCKS = 12
#: Largest cubic shape and number of sites of ``harmonize synth`` (256^3 voxels over 200 mm: 0.8 mm voxels).
SYNTH_MAX_SHAPE = 256
SYNTH_MIN_SHAPE = 16
SYNTH_MAX_SITES = 64

# --- memory (harmonize.memory) -------------------------------------------------------------------------------
#: Environment variable that caps the memory harmonize plans for (in GiB; e.g. for a job's share of a node, or
#: tests); without it, the machine's available memory is the cap.
MEMORY_LIMIT_ENV = "HARMONIZE_MEMORY_LIMIT_GB"
#: Share of the available memory one allocation may plan to use (the rest is left to the process and the system).
MEMORY_FRACTION = 0.8

# --- forgetting subjects of a trained model (harmonize forget) ------------------------------------------------
#: Bootstrap replicates and level of the membership-inference AUC's interval (harmonize.audit.membership).
MIA_BOOTSTRAP = 1000
MIA_CONFIDENCE = 0.95
#: The forgetting method of ``harmonize forget`` and the bundle's forget.json when none is named: gradient ascent,
#: the one that met the targets of docs/forgetting.md (membership AUC near the oracle's, held-out MAE kept, a small
#: share of retraining) on the mean of 3 seeds.
FORGET_METHOD = "ga"
#: Unlearning schedule of a brain-age model: epochs of the FT stage over the retained training subjects, of the
#: forget stage (GA / GA-L1 / NL) over the withdrawn ones, and the Adam learning rates (with the loss ceiling below;
#: why this many forget epochs: docs/forgetting.md).
FORGET_FT_EPOCHS = 2
FORGET_FORGET_EPOCHS = 3
FORGET_LEARNING_RATE = 1e-4
FORGET_GA_LEARNING_RATE = 1e-4
#: Per-subject ceiling of the withdrawn subjects' loss under gradient ascent, in squared age standard deviations
#: (``StandardisedMSELoss``): a subject whose age error reached sqrt(0.1) = 0.32 standard deviations of the training
#: ages no longer pushes the ascent (measured in docs/forgetting.md).
FORGET_LOSS_CEILING: float | None = 0.1
#: Epochs of a segmentation model's oracle (``harmonize forget --oracle``): the segmentation bundle's ``max_epochs``.
FORGET_SEGMENTATION_ORACLE_EPOCHS = 10
#: Share of the training subjects withdrawn by ``mark_forget`` when a run gives no forget list (the bundles').
FORGET_FRACTION = 0.1
