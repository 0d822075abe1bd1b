"""Writes notebooks/*.ipynb from the cell sources below and executes them, keeping the outputs.

    .venv/bin/python scripts/make_notebooks.py [NAME ...]   # ZYLAX_SMALL=1 is set for the run

The committed notebooks hold the outputs of that small-setting run, so a reader
sees the tables and plots on a code host; CI executes them again.
"""

from __future__ import annotations

import os
import sys

import nbclient
import nbformat

INSTALL = '''import os, sys
if "google.colab" in sys.modules:  # Colab: install zylax first (the data comes through TFDS)
    # the repository to install: yours when you set ZYLAX_SOURCE (a variable or the environment)
    ZYLAX_SOURCE = (globals().get("ZYLAX_SOURCE") or os.environ.get("ZYLAX_SOURCE")
                    or "git+https://github.com/zylax/zylax")
    !pip install -q "zylax @ {ZYLAX_SOURCE}"'''
INSTALL_LITERT = INSTALL.replace('"zylax @', '"zylax[litert] @')  # + TensorFlow and LiteRT

NOTEBOOKS = {
    "00_quickstart": [
        ("md", "# zylax quickstart\n\nLoad real Fashion-MNIST, build LeNet-300-100, train it "
               "briefly and plot the learning curve. `ZYLAX_SMALL=1` (CI) trains on a "
               "6,000-image subset for 2 epochs."),
        ("code", INSTALL),
        ("code", '''import os
%matplotlib inline
import matplotlib.pyplot as plt
import optax

from zylax import data, nets, train

SMALL = os.environ.get("ZYLAX_SMALL") == "1"
EPOCHS = 2 if SMALL else 10'''),
        ("code", '''train_images, train_labels = data.load("fashion_mnist", "train")
test_images, test_labels = data.load("fashion_mnist", "test")
if SMALL:
    train_images, train_labels = train_images[:6000], train_labels[:6000]
preprocess = data.preprocessing("fashion_mnist")  # (x / 255 - mean) / std, as an object
print(train_images.shape, train_images.dtype, train_labels[:10])'''),
        ("code", '''model = nets.LeNet300100()
result = train.fit(model, optax.adam(1e-3), (train_images, train_labels), epochs=EPOCHS,
                   preprocess=preprocess, eval_data=(test_images, test_labels), progress=False)
result.history[-1]'''),
        ("code", '''epochs = [row["epoch"] for row in result.history]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(epochs, [row["train_accuracy"] for row in result.history], "o-", label="train")
ax.plot(epochs, [row["test_accuracy"] for row in result.history], "s-", label="test")
ax.set_xlabel("epoch"); ax.set_ylabel("accuracy"); ax.legend(); fig.tight_layout()
plt.show()'''),
    ],
    "01_deep_compression": [
        ("md", "# Deep Compression, stage by stage (LeNet-300-100, Fashion-MNIST)\n\nTrain, "
               "prune and retrain in cycles, share weights by k-means and fine-tune the "
               "centroids, Huffman-code into a `.zyl` file, load it back and evaluate: the "
               "stages `compress.run` chains, called one by one. Each stage is a method of "
               "`zylax.methods` (`prune`, then `share`) retrained with its own optax "
               "transformation. `ZYLAX_SMALL=1` (CI) trains on a subset for one epoch per "
               "stage."),
        ("code", INSTALL),
        ("code", '''import dataclasses, os, tempfile
%matplotlib inline
import jax
import numpy as np

from zylax import archive, compress, data, registry, report, tasks, train
from zylax.transforms import tree

SMALL = os.environ.get("ZYLAX_SMALL") == "1"
spec = registry.get("lenet300")  # factory, recipe and measured compression presets
preset = compress.Preset(**spec.compression["deep"])
prune, share = preset.chain()  # methods.prune(sparsity=..., cycles=4), methods.share(bits=5)
if SMALL:
    prune = dataclasses.replace(prune, cycles=1, epochs=1)
    share = dataclasses.replace(share, epochs=1)
train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
if SMALL:
    train_data = tuple(a[:6000] for a in train_data)
prep = data.preprocessing("fashion_mnist")
model = spec.factory(10)
ctx = compress.Context(model, train_data, test_data, tasks.Classification(), prep,
                       compress.Retrain(**preset.retrain), progress=False)
prune, share'''),
        ("md", "## 1. Dense baseline"),
        ("code", '''dense = train.fit_recipe(model, spec.recipe, train_data, preprocess=prep,
                         epochs=1 if SMALL else None, progress=False).variables
dense_accuracy = ctx.task.evaluate(model, dense, *test_data, preprocess=prep)["accuracy"]
print("dense accuracy", dense_accuracy)'''),
        ("md", "## 2. Pruning in cycles, each retrained with the zeros kept\n\n"
               "`prune.stages()` is one one-shot pruning per cycle, at Han's cubic fractions of "
               "the final sparsity; the method's `tx` keeps every pruned weight exactly zero."),
        ("code", '''key = jax.random.key(0)
snapshots, stage = {"dense": dense["params"]}, None
for i, cycle in enumerate(prune.stages()):
    stage = (compress.begin(cycle, dense, key) if stage is None
             else compress.follow(stage, cycle, key))
    stage = compress.retrain_stage(ctx, stage, cycle, ctx.retrain.learning_rate,
                                   f"prune {i + 1}")
    params = stage.plan.apply(stage.state)
    kept = {name: round(float(np.mean(np.asarray(w) != 0)), 3)
            for name, w in tree.named_leaves(params).items() if name.endswith("kernel")}
    print(f"cycle {i + 1}: kept {kept}, accuracy {ctx.score(stage):.4f}")
snapshots["prune"] = params'''),
        ("md", "## 3. Weight sharing: k-means (linear init) and centroid fine-tuning"),
        ("code", '''stage = compress.follow(stage, share, key)
stage = compress.retrain_stage(ctx, stage, share, ctx.retrain.learning_rate * share.lr_scale,
                               "share")
snapshots["share"] = jax.device_get(stage.plan.apply(stage.state))
print("shared accuracy", ctx.score(stage))'''),
        ("md", "## 4. Huffman-coded file, loaded back"),
        ("code", '''path = os.path.join(tempfile.mkdtemp(), "lenet300.zyl")
stored = compress.storable(stage, model, prep(train_data[0][:1]), False, {})
size = archive.save(path, stored, metadata={"net": "lenet300", "data": "fashion_mnist"})
loaded, header = archive.load_with_header(path)
accuracy = ctx.task.evaluate(model, loaded, *test_data, preprocess=prep)["accuracy"]
rep = report.build(header, file_bytes=size, reference=spec.reference,
                   accuracies={"dense": dense_accuracy, "compressed": accuracy})
print(report.format_table(rep))
print("decoded file equals the in-memory model bit for bit:",
      tree.bit_identical(loaded["params"], snapshots["share"]))'''),
        ("md", "## 5. Weight distribution of ip1 after each stage (Han's Figure 4/5)"),
        ("code", '''report.plot_weights(snapshots, "ip1/kernel")'''),
    ],
    "02_binary_and_ternary": [
        ("md", "# Binary and ternary weights on Fashion-MNIST, written to files\n\nBNN (binary "
               "weights and activations), Trained Ternary Quantization and SEP-Net pattern "
               "binarization, each a method of `zylax.methods` with the same four functions: "
               "`init` (the latent state), `apply` (the weights the model runs, "
               "straight-through inside), `tx` (the optax transformation that trains the latent "
               "state) and `store` (the codec containers a `.zyl` file holds). Each is trained, "
               "written to a file and evaluated from that file. `ZYLAX_SMALL=1` (CI) trains on "
               "3,000 images for one epoch."),
        ("code", INSTALL),
        ("code", '''import os, tempfile
import jax
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import optax

from zylax import archive, compress, data, methods, nets, train
from zylax.transforms import binary

SMALL = os.environ.get("ZYLAX_SMALL") == "1"
EPOCHS = 1 if SMALL else 5
train_data = data.load("fashion_mnist", "train"); test_data = data.load("fashion_mnist", "test")
if SMALL:
    train_data = tuple(a[:3000] for a in train_data)
prep = data.preprocessing("fashion_mnist")
folder = tempfile.mkdtemp()
key = jax.random.key(0)
results = {}


def from_file(model, name, stored):
    """Saves, loads back, evaluates: the size and accuracy reported come from the file."""
    path = os.path.join(folder, name + ".zyl")
    size = archive.save(path, stored)
    loaded, _ = archive.load(path)
    accuracy = train.evaluate(model, loaded, *test_data, preprocess=prep)["accuracy"]
    dense = 4 * sum(np.size(x) for x in jax.tree.leaves(loaded))
    results[name] = (dense, size, accuracy)
    print(f"{name}: {size:,} bytes, {dense / size:.1f}x smaller than fp32, "
          f"accuracy {accuracy:.4f} measured on the file")
    return loaded'''),
        ("md", "## BNN from scratch: binary weights (every layer, BatchNorm after each) and "
               "binary activations\n\nThe method used directly: `init` on a fresh model, "
               "`tx` clips the latent weights to [-1, 1] after Adam's step, and the training "
               "loop runs `apply` inside the loss."),
        ("code", '''bnn = nets.MLP(hidden=(512, 512), activation=binary.binary_activation)
variables = train.init_variables(bnn, prep(train_data[0][:1]), 0)
method = methods.binary(scale=None, keep_float=())  # BNN: plain +-1, no layer kept float
state = method.init(variables["params"], key)
result = train.fit(bnn, method.tx(optax.adam(3e-3)), train_data, epochs=EPOCHS,
                   preprocess=prep, variables={**variables, "params": state["latent"]},
                   method=method, aux=state["aux"], progress=False)
state = {"latent": result.state.params, "aux": state["aux"]}
_ = from_file(bnn, "BNN MLP", {**result.variables, "params": method.store(state)})'''),
        ("md", "## TTQ on a trained LeNet-5: every kernel but the first and last (in execution "
               "order)"),
        ("code", '''lenet = nets.LeNet5()
dense = train.fit(lenet, optax.adam(1e-3), train_data, epochs=EPOCHS, preprocess=prep,
                  progress=False).variables
ttq = methods.ternary().bind(lenet, dense, prep(train_data[0][:1]))  # runs it once for the order
print("kept float:", ttq.exclude)
state = ttq.init(dense["params"], key)
result = train.fit(lenet, ttq.tx(optax.adam(1e-3)), train_data, epochs=EPOCHS, preprocess=prep,
                   variables={"params": state["latent"]}, method=ttq, aux=state["aux"],
                   progress=False)
ttq_state = {"latent": result.state.params, "aux": state["aux"]}
_ = from_file(lenet, "TTQ LeNet-5", {"params": ttq.store(ttq_state)})
print({name: {s: round(float(v), 4) for s, v in scales.items()}
       for name, scales in ttq_state["latent"]["own"][0].items()})'''),
        ("md", "## SEP-Net pattern binarization of both 5x5 convolutions, by the pipeline\n\n"
               "`compress.run` does the same for any chain: here one stage, the `pattern` "
               "method, retrained at a learning rate it chose on held-out training images."),
        ("code", '''run = compress.run(lenet, dense, train_data, test_data, [methods.pattern(epochs=EPOCHS)],
                   out=os.path.join(folder, "pattern.zyl"), preprocess=prep, progress=False)
print(f"chosen learning rate {run.report['learning_rate']:g}")
_ = from_file(lenet, "pattern LeNet-5", run.stored)'''),
        ("md", "## Latent vs ternary weights (ip1 of the TTQ LeNet-5), and the file sizes"),
        ("code", '''quantized = ttq.apply(ttq_state)
fig, axes = plt.subplots(1, 3, figsize=(14, 3))
axes[0].hist(np.asarray(ttq_state["latent"]["params"]["ip1"]["kernel"]).ravel(), 200)
axes[0].set_title("latent ip1")
v, c = np.unique(np.asarray(quantized["ip1"]["kernel"]), return_counts=True)
axes[1].bar(v, c, width=0.01); axes[1].set_title("ternary ip1")
names = list(results)
axes[2].bar(names, [results[n][0] / results[n][1] for n in names])
axes[2].set_ylabel("x smaller than fp32 (file)")
fig.tight_layout()
plt.show()'''),
    ],
    "03_architectures": [
        ("md", "# Small architectures: parameters and multiply-adds vs the papers\n\nBuild "
               "SqueezeNet 1.0/1.1, MobileNet V1/V2 and SEP-Net, print their summaries, compare "
               "with the published tables, and train one briefly on Fashion-MNIST "
               "(`ZYLAX_SMALL=1`: 3,000 images, one epoch)."),
        ("code", INSTALL),
        ("code", '''import os
%matplotlib inline
import matplotlib.pyplot as plt

from zylax import data, nets, registry, train

SMALL = os.environ.get("ZYLAX_SMALL") == "1"'''),
        ("code", "_ = nets.summary(nets.MobileNetV1(alpha=0.25), (128, 128, 3))"),
        ("code", '''# (model, input size, paper params in M, paper MACs in M)
reference = {
    "MobileNet V1 1.0 @224": (nets.MobileNetV1(), 224, 4.2, 569),
    "MobileNet V1 0.75 @224": (nets.MobileNetV1(alpha=0.75), 224, 2.6, 325),
    "MobileNet V1 0.5 @224": (nets.MobileNetV1(alpha=0.5), 224, 1.3, 149),
    "MobileNet V1 0.25 @224": (nets.MobileNetV1(alpha=0.25), 224, 0.5, 41),
    "MobileNet V1 1.0 @160": (nets.MobileNetV1(), 160, 4.2, 290),
    "MobileNet V2 1.0 @224": (nets.MobileNetV2(), 224, 3.4, 300),
    "SqueezeNet 1.0 @224": (nets.SqueezeNet1_0(), 224, 1.25, 819),
    "SqueezeNet 1.1 @224": (nets.SqueezeNet1_1(), 224, 1.24, 349),
    "SEP-Net @224": (nets.SEPNet(), 224, 1.3, None),
}
ours = {name: nets.summary(m, (size, size, 3), print_table=False)
        for name, (m, size, _, _) in reference.items()}
for name, s in ours.items():
    print(f"{name:24s} {s.params / 1e6:6.3f}M params (paper {reference[name][2]}M)  "
          f"{s.macs / 1e6:7.1f}M MACs (paper {reference[name][3]})")'''),
        ("code", '''fig, ax = plt.subplots(figsize=(6, 4))
for name, s in ours.items():
    ax.scatter(s.macs / 1e6, s.params / 1e6, color="tab:blue")
    ax.annotate(name, (s.macs / 1e6, s.params / 1e6), fontsize=7)
    if reference[name][3] is not None:
        ax.scatter(reference[name][3], reference[name][2], marker="x", color="tab:red")
ax.set_xscale("log"); ax.set_xlabel("MACs (M)"); ax.set_ylabel("parameters (M)")
ax.set_title("zylax (dots) vs papers (crosses)"); fig.tight_layout()
plt.show()'''),
        ("code", '''images, labels = data.load("fashion_mnist", "train")
test = data.load("fashion_mnist", "test")
n = 3000 if SMALL else 60000
# the registered SqueezeNet starts conv10's bias at 1 and its recipe warms up and smooths
# labels: with the ReLU on the logits, a class can otherwise die for good (see RESULTS.md)
spec = registry.get("squeezenet1_1")
model = spec.factory(10)
prep = data.preprocessing("fashion_mnist", spec.recipe.pad_to)
result = train.fit_recipe(model, spec.recipe, (images[:n], labels[:n]), preprocess=prep,
                          epochs=1, progress=False)
acc = train.evaluate(model, result.variables, test[0][:2000], test[1][:2000],
                     preprocess=prep)["accuracy"]
print("SqueezeNet 1.1 after one short epoch:", acc)'''),
    ],
    "04_your_own_model": [
        ("md", "# Your own model: a ResNet-style Flax net, compressed three ways\n\n"
               "The model below is defined here, not in zylax: its own layer names, BatchNorm, "
               "residual blocks, no `train` argument. We train it, then compress it with the "
               "library (pruning + weight sharing, pruning + TTQ, BNN) into `.zyl` files, "
               "reload them and compare size and accuracy, all measured on what was decoded "
               "from the files. "
               "`ZYLAX_SMALL=1` (CI) trains on 3,000 images for two epochs and tests on 1,000."),
        ("code", INSTALL),
        ("code", '''import functools, os, tempfile
import flax.linen as nn
import jax
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import optax

from zylax import archive, compress, data, methods, report, train

SMALL = os.environ.get("ZYLAX_SMALL") == "1"
EPOCHS = 2 if SMALL else 8
train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
if SMALL:
    train_data, test_data = tuple(a[:3000] for a in train_data), tuple(a[:1000] for a in test_data)
prep = data.Preprocess.fit(train_data[0])  # statistics of our own training images
folder = tempfile.mkdtemp()'''),
        ("code", '''class Block(nn.Module):
    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        norm = functools.partial(nn.BatchNorm, use_running_average=not training, momentum=0.9)
        y = nn.Conv(self.channels, (3, 3), self.stride, use_bias=False, name="conv_a")(x)
        y = nn.relu(norm(name="bn_a")(y))
        y = nn.Conv(self.channels, (3, 3), use_bias=False, name="conv_b")(y)
        y = norm(name="bn_b", scale_init=nn.initializers.zeros)(y)
        if x.shape != y.shape:
            x = norm(name="bn_proj")(nn.Conv(self.channels, (1, 1), self.stride,
                                             use_bias=False, name="proj")(x))
        return nn.relu(x + y)


class TinyResNet(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        training = self.is_mutable_collection("batch_stats")
        x = nn.Conv(16, (3, 3), use_bias=False, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not training, momentum=0.9,
                                 name="stem_bn")(x))
        for i, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            x = Block(channels, stride, name=f"stage{i + 1}")(x)
        return nn.Dense(self.num_classes, name="logits")(x.mean(axis=(1, 2)))


model = TinyResNet()
recipe = train.Recipe(epochs=EPOCHS, batch_size=64, learning_rate=3e-3,
                      weight_decay=1e-4)  # AdamW, cosine decay
dense = train.fit_recipe(model, recipe, train_data, preprocess=prep, progress=False).variables
dense_accuracy = train.evaluate(model, dense, *test_data, preprocess=prep)["accuracy"]
print("collections:", list(dense), " dense accuracy:", dense_accuracy)'''),
        ("md", "## 1. Deep Compression, TTQ and BNN, each in one call\n\n"
               "`compress.run` takes any chain of `zylax.methods` (one stage a method, one epoch "
               "each, a learning rate chosen on held-out training images; the quick run, "
               "`ZYLAX_SMALL=1`, takes a fixed 1e-2 instead). The chain below prunes 70%, more "
               "than the defaults' 50%; the table shows what that costs at this setting. TTQ and BNN keep the first and "
               "last layers float, found in execution order."),
        ("code", '''chains = {
    "prune+share (Deep Compression)": [methods.prune(sparsity=0.7), methods.share(bits=5)],
    "prune+TTQ": [methods.prune(sparsity=0.5), methods.ternary()],
    "BNN (a scale per channel)": [methods.binary()],
}
# the quick run (ZYLAX_SMALL=1) takes one fixed rate; a full run chooses one per chain
retrain = compress.Retrain(learning_rate=1e-2 if SMALL else None)
runs = {name: compress.run(model, dense, train_data, test_data, chain, preprocess=prep,
                           retrain=retrain, out=os.path.join(folder, f"resnet_{i}.zyl"),
                           progress=False)
        for i, (name, chain) in enumerate(chains.items())}
print(report.format_table(runs["prune+TTQ"].report))'''),
        ("md", "## 2. Reload the files and compare"),
        ("code", '''dense_bytes = 4 * sum(np.size(x) for x in jax.tree.leaves(dense))
rows = {"fp32": (dense_bytes, dense_accuracy)}
for i, name in enumerate(runs):
    path = os.path.join(folder, f"resnet_{i}.zyl")
    loaded, _ = archive.load(path)  # params and batch_stats, decoded from the file
    accuracy = train.evaluate(model, loaded, *test_data, preprocess=prep)["accuracy"]
    rows[name] = (os.path.getsize(path), accuracy)
for name, (size, accuracy) in rows.items():
    print(f"{name:32s} {size:>9,} bytes  {dense_bytes / size:5.1f}x  accuracy {accuracy:.4f}")
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3))
labels = [name.split(" (")[0] for name in rows]
a.bar(labels, [dense_bytes / s for s, _ in rows.values()]); a.set_ylabel("x smaller")
b.bar(labels, [acc for _, acc in rows.values()]); b.set_ylabel("test accuracy")
b.set_ylim(min(acc for _, acc in rows.values()) - 0.05, 1)
fig.tight_layout()
plt.show()'''),
    ],
    "05_detection_segmentation": [
        ("md", "# Detection and segmentation: SSDLite and DeepLabV3 on MobileNet V2\n\n"
               "Scenes of real Fashion-MNIST items (`zylax.scenes`): SSDLite finds each item's "
               "box and class (scored with pycocotools: COCO AP), DeepLabV3 labels every pixel "
               "(mIoU). First the trained models kept in the repository "
               "(`experiments/models/`), scored on test scenes and drawn next to the ground "
               "truth; then the paper's configurations, counted; last a tiny training demo, "
               "which shows the API, not what training reaches. `ZYLAX_SMALL=1` (CI) scores "
               "the kept models on the first 500 test scenes and trains the demo for 10 steps."),
        ("code", INSTALL),
        ("code", '''import dataclasses, os
import jax
import jax.numpy as jnp
%matplotlib inline
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
import numpy as np

from zylax import data, modelfile, nets, registry, scenes, tasks, train
from zylax.resizing import resize_dense

SMALL = os.environ.get("ZYLAX_SMALL") == "1"
SCORED = 500 if SMALL else 10_000  # the first SCORED of the 10,000 test scenes
MODELS = os.path.join("..", "experiments", "models")  # the kept files (run from notebooks/)
KEPT = ("ssdlite_ct4.zyl", "deeplab120_ft2.zyl")
if not os.path.isdir(MODELS):  # Colab: fetch the two files from the repository
    import urllib.request
    MODELS = "kept_models"
    os.makedirs(MODELS, exist_ok=True)
    for name in KEPT:
        urllib.request.urlretrieve("https://github.com/zylax/zylax/raw/main/experiments/models/"
                                   + name, os.path.join(MODELS, name))'''),
        ("md", "## 1. The trained models kept in the repository\n\n"
               "- `experiments/models/ssdlite_ct4.zyl`: `SSDLiteSmall(10)` (96x96 input), its "
               "trunk pretrained as a Fashion-MNIST classifier, then 4 epochs on mirrored "
               "scenes (41.6 min in all): **AP50 0.824, mAP 0.649** on all 10,000 test scenes.\n"
               "- `experiments/models/deeplab120_ft2.zyl`: `DeepLabV3Small(11)` trained 12 "
               "epochs, then 2 more on the scenes resized to 120x120 inside the net "
               "(`Rescaled(..., 1.25)`, 5.6 h in all): **mIoU 0.7253**, pixel accuracy 0.9643 "
               "on all 10,000 test scenes.\n\n"
               "RESULTS.md has the commands and timings. `modelfile.load_model_file` builds "
               "each from its file alone (the registered net it names, its preprocessing and "
               "its task). Here they are scored on the first 500 test scenes with "
               "`ZYLAX_SMALL=1` (CI), on all 10,000 otherwise; `zylax evaluate FILE` does the "
               "same from the command line."),
        ("code", '''ssd = modelfile.load_model_file(os.path.join(MODELS, "ssdlite_ct4.zyl"))
seg = modelfile.load_model_file(os.path.join(MODELS, "deeplab120_ft2.zyl"))
images, targets = data.load("fashion_mnist_scenes", "test")  # the 10,000 scenes RESULTS.md scores
images, targets = images[:SCORED], data.take(targets, np.arange(SCORED))
full_test = {"AP50": 0.824, "mAP": 0.649, "mIoU": 0.7253, "pixel_accuracy": 0.9643}  # RESULTS.md
for f, names in ((ssd, ("AP50", "mAP")), (seg, ("mIoU", "pixel_accuracy"))):
    scores = f.task.evaluate(f.model, f.variables, images, targets, preprocess=f.preprocess)
    here = ", ".join(f"{n} {scores[n]:.3f}" for n in names)
    there = ", ".join(f"{n} {full_test[n]}" for n in names)
    print(f"{os.path.basename(f.path)} ({f.metadata.net}, {f.task.name})\\n"
          f"    first {SCORED:,} test scenes: {here}\\n    all 10,000 (RESULTS.md): {there}")'''),
        ("md", "### The kept models' predictions next to the ground truth\n\nSix test scenes: "
               "the true boxes, SSDLite's boxes scored above 0.5, the true mask and "
               "DeepLabV3's mask (each pixel's most likely label)."),
        ("code", '''LABEL_COLORS = ListedColormap(["black", *plt.get_cmap("tab10").colors])  # 0: background


def predicted_masks(model, variables, x):
    """Per-pixel argmax labels, the logits resized to the image size first (as the task does)."""
    logits = jax.jit(model.apply)(variables, x)
    return np.asarray(jnp.argmax(resize_dense(logits, *x.shape[1:3]), -1))


def draw(ax, boxes, classes, color):
    for (x0, y0, x1, y1), c in zip(boxes, classes):
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                   color=color))
        ax.text(x0, y0 - 1, scenes.CLASS_NAMES[c], color=color, fontsize=7)


def compare(images, targets, found, masks, threshold, detector, segmenter):
    """Rows: true boxes, detected boxes (score > threshold), true mask, predicted mask."""
    n = len(masks)
    fig, axes = plt.subplots(4, n, figsize=(2.1 * n, 9.4))
    for i in range(n):
        truth = targets["valid"][i]
        shown = found["valid"][i] & (found["scores"][i] > threshold)
        axes[0, i].imshow(images[i, ..., 0], cmap="gray")
        draw(axes[0, i], targets["boxes"][i][truth], targets["classes"][i][truth], "lime")
        axes[1, i].imshow(images[i, ..., 0], cmap="gray")
        draw(axes[1, i], found["boxes"][i][shown], found["classes"][i][shown], "red")
        axes[1, i].set_xlabel(f"{shown.sum()} found, {truth.sum()} true", fontsize=8)
        for row, mask in ((2, targets["segmentation"][i]), (3, masks[i])):
            axes[row, i].imshow(mask, cmap=LABEL_COLORS, vmin=0, vmax=10,
                                interpolation="nearest")
    for row, title in enumerate(("true boxes", f"{detector}\\n(score > {threshold})",
                                 "true mask", segmenter)):
        axes[row, 0].set_ylabel(title)
    for ax in axes.flat:
        ax.set_xticks([]); ax.set_yticks([])
    fig.legend(handles=[Patch(color=LABEL_COLORS(1 + c), label=name)
                        for c, name in enumerate(scenes.CLASS_NAMES)],
               loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    plt.show()


found = ssd.task.predict(ssd.model, ssd.variables, images[:6], preprocess=ssd.preprocess)
masks = predicted_masks(seg.model, seg.variables, seg.preprocess(images[:6]))
compare(images, targets, found, masks, 0.5, "SSDLite, kept", "DeepLabV3, kept")'''),
        ("md", "## 2. The paper configurations, counted"),
        ("code", '''ssd_paper = nets.summary(nets.SSDLite(num_classes=80), (320, 320, 3), print_table=False)
deeplab_paper = nets.summary(nets.DeepLabV3(num_classes=21), (512, 512, 3), print_table=False)
for name, s, paper in (("SSDLite, 320x320, 80 classes", ssd_paper, (4.3e6, 0.8e9)),
                       ("DeepLabV3, 512x512, 21 classes", deeplab_paper, (2.11e6, 2.75e9))):
    print(f"{name:32s} params {s.params:>10,} (paper {paper[0] / 1e6:.2f}M)  "
          f"MACs {s.macs:>14,} (paper {paper[1] / 1e9:.2f}B)")'''),
        ("md", "## 3. A tiny training demo: a few steps, so its pictures are expected to be poor"
               "\n\nHow to train the small configurations yourself: the registry holds the "
               "model factory, recipe and task of each; `tasks.for_model` gives the loss the "
               "training loop minimises and the metric it is scored by. With `ZYLAX_SMALL=1` "
               "(CI) each net is trained **from scratch for only 10 steps of 32 scenes** "
               "(320 scenes, one epoch, about a minute on a CPU) and scored on 100 test "
               "scenes, so its scores are near zero and its boxes and masks below are poor "
               "(boxes scattered over the scenes, masks all or mostly background). That is "
               "expected: it shows the API, not what training reaches. For that, see the kept "
               "models in "
               "section 1 (40 min to 5.6 h of training, RESULTS.md). Without `ZYLAX_SMALL` "
               "this runs each net's registered recipe on all 60,000 training scenes."),
        ("code", '''if SMALL:  # fewer scenes, generated the same way from the same items
    (train_images, train_targets), (test_images, test_targets) = (scenes.load("train", 320),
                                                                  scenes.load("test", 100))
else:  # data.load("fashion_mnist_scenes", split): 60,000 and 10,000 scenes
    train_images, train_targets = data.load("fashion_mnist_scenes", "train")
    test_images, test_targets = data.load("fashion_mnist_scenes", "test")
print(train_images.shape, {k: v.shape for k, v in train_targets.items()})
prep = data.preprocessing("fashion_mnist_scenes")
trained = {}
for name in ("ssdlite_mobilenet_v2", "deeplabv3_mobilenet_v2"):
    spec = registry.get(name)
    model = spec.factory(11 if spec.task == "segmentation" else 10)
    task = tasks.for_model(model, train_images.shape[1:], spec.task)
    recipe = dataclasses.replace(spec.recipe, batch_size=32, warmup_steps=20) if SMALL else \\
        spec.recipe
    result = train.fit_recipe(model, recipe, (train_images, train_targets), preprocess=prep,
                              epochs=1 if SMALL else None, task=task, progress=False)
    scores = task.evaluate(model, result.variables, test_images, test_targets, preprocess=prep)
    trained[name] = (model, task, result.variables)
    print(name, {k: round(v, 4) for k, v in scores.items()
                 if k in ("mAP", "AP50", "mIoU", "pixel_accuracy")})'''),
        ("md", "### The demo's predictions (poor by design at `ZYLAX_SMALL=1`)\n\nThe same "
               "four rows as in section 1, for six test scenes, from the demo's nets; boxes "
               "are drawn above a lower score (0.2), since a net this briefly trained is "
               "rarely confident."),
        ("code", '''model, task, variables = trained["ssdlite_mobilenet_v2"]
found = task.predict(model, variables, test_images[:6], preprocess=prep)
seg_model, _, seg_variables = trained["deeplabv3_mobilenet_v2"]
masks = predicted_masks(seg_model, seg_variables, prep(test_images[:6]))
compare(test_images, test_targets, found, masks, 0.2, "SSDLite, demo", "DeepLabV3, demo")'''),
    ],
    "06_export_litert": [
        ("md", "# Ship it to a phone: `.zyl` file -> LiteRT `.tflite`\n\nTwo compressed "
               "LeNet-300-100 files (Deep Compression's shared weights, and TTQ's ternary "
               "weights) exported to LiteRT, the runtime of Android/iOS apps, and run by its "
               "interpreter. With `weights=\"auto\"` ternary, binary and pattern kernels are "
               "stored in 2-bit integers and read back exactly; shared (k-means) kernels are "
               "snapped to int8 with one scale per tensor, with the error reported per layer. "
               "`ZYLAX_SMALL=1` (CI) trains on 6,000 images for one epoch."),
        ("code", INSTALL_LITERT),
        ("code", '''import dataclasses, os, tempfile
%matplotlib inline
import jax
import matplotlib.pyplot as plt
import numpy as np
import optax
from ai_edge_litert.interpreter import Interpreter

from zylax import archive, compress, data, export, methods, registry, train

SMALL = os.environ.get("ZYLAX_SMALL") == "1"
train_data, test_data = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
if SMALL:
    train_data = tuple(a[:6000] for a in train_data)
spec = registry.get("lenet300")
prep = data.preprocessing("fashion_mnist")
model = spec.factory(10)
dense = train.fit_recipe(model, spec.recipe, train_data, preprocess=prep,
                         epochs=1 if SMALL else None, progress=False).variables
folder = tempfile.mkdtemp()
files = {"Deep Compression": os.path.join(folder, "lenet300_dc.zyl"),
         "TTQ": os.path.join(folder, "lenet300_ttq.zyl")}'''),
        ("md", "## 1. Two compressed files"),
        ("code", '''preset = compress.Preset(**spec.compression["deep"])
prune, share = preset.chain()
if SMALL:
    prune = dataclasses.replace(prune, cycles=1, epochs=1)
    share = dataclasses.replace(share, epochs=1)
compress.run(model, dense, train_data, test_data, [prune, share], out=files["Deep Compression"],
             retrain=compress.Retrain(**preset.retrain), preprocess=prep, progress=False)
ttq = methods.ternary(keep_float=("last",), epochs=1 if SMALL else 3)  # ip1, ip2 ternary
compress.run(model, dense, train_data, test_data, [ttq], out=files["TTQ"], preprocess=prep,
             progress=False)
{name: os.path.getsize(path) for name, path in files.items()}'''),
        ("md", "## 2. Export: how each kernel is stored, and how far it moved\n\n"
               "`stored_methods` tells the exporter which codec each leaf of the file used "
               "(the loaded arrays are plain). `max |dw|` compares the stored kernel with the "
               "float one; `0 (exact)` means equal, weight for weight. A pruned kernel whose "
               "non-zero values and one-byte gaps gzip smaller than its dense tensor is stored "
               "so (`int8 sparse`); one of at most 64 distinct values may instead be a palette "
               "of them and one byte per kept weight holding its gap and value index "
               "(`palette sparse`: the codebook's own values, exact). Either is a smaller "
               "download, rebuilt at every invoke, so slower; `sparse=False` keeps every "
               "kernel dense."),
        ("code", '''test_x = prep(test_data[0])


def load(path):
    variables, _ = archive.load(path)
    return variables, export.stored_methods(archive.read_header(path))


exported = {}
for name, path in files.items():
    variables, methods = load(path)
    for weights in ("float32", "auto"):
        exported[name, weights] = export.export(model, variables, test_x[:1], weights=weights,
                                                methods=methods)
    exported[name, "auto, dense"] = export.export(model, variables, test_x[:1],
                                                  methods=methods, sparse=False)
    print(name)
    print(export.format_layers(exported[name, "auto"].layers), "\\n")'''),
        ("md", "## 3. Accuracy of the LiteRT interpreter on the 10,000 test images"),
        ("code", '''def litert_accuracy(name, weights, batch=100):
    """Runs the default interpreter (XNNPACK) over the test set, `batch` images an invoke, on
    the kernels of the batch-1 file exported above (`forms`: each kernel as that file stores
    it)."""
    variables, methods = load(files[name])
    tflite = export.to_tflite(model, variables, test_x[:1], weights=weights, methods=methods,
                              batch=batch, forms=exported[name, weights].forms)
    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]["index"]
    wanted = interpreter.get_output_details()[0]["index"]
    correct = 0
    for i in range(0, len(test_x), batch):
        interpreter.set_tensor(given, test_x[i:i + batch])
        interpreter.invoke()
        correct += int(np.sum(interpreter.get_tensor(wanted).argmax(1) ==
                              test_data[1][i:i + batch]))
    return correct / len(test_x)


for name, path in files.items():
    jax_accuracy = train.evaluate(model, load(path)[0], *test_data, preprocess=prep)["accuracy"]
    for weights in ("float32", "auto"):
        print(f"{name:17s} {weights:8s} {len(exported[name, weights].tflite):>9,} bytes  "
              f"LiteRT {litert_accuracy(name, weights):.4f}  JAX {jax_accuracy:.4f}")'''),
        ("md", "## 4. The size ladder: fp32 params -> `.zyl` -> `.tflite`"),
        ("code", '''fp32_bytes = 4 * sum(np.size(a) for a in jax.tree.leaves(dense))
ladder = {name: {"fp32 params": fp32_bytes, ".zyl": os.path.getsize(path),
                 ".tflite float32": len(exported[name, "float32"].tflite),
                 ".tflite auto": len(exported[name, "auto"].tflite),
                 "gzip -9 of .tflite auto": exported[name, "auto"].download_bytes,
                 "gzip -9, every kernel dense": exported[name, "auto, dense"].download_bytes}
          for name, path in files.items()}
steps = list(next(iter(ladder.values())))
fig, ax = plt.subplots(figsize=(11, 3.5))
for i, (name, sizes) in enumerate(ladder.items()):
    ax.bar(np.arange(len(steps)) + 0.4 * i, [sizes[s] for s in steps], 0.4, label=name)
ax.set_xticks(np.arange(len(steps)) + 0.2, steps)
ax.set_yscale("log"); ax.set_ylabel("bytes"); ax.legend(); fig.tight_layout()
plt.show()
ladder'''),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    for kind, source in NOTEBOOKS[name]:
        cell = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        nb.cells.append(cell(source))
    return nb


def main(names: list[str]) -> None:
    os.environ["ZYLAX_SMALL"] = "1"
    root = os.path.join(os.path.dirname(__file__), "..", "notebooks")
    for name in names or sorted(NOTEBOOKS):
        nb = build(name)
        nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                                resources={"metadata": {"path": root}}).execute()
        for i, cell in enumerate(nb.cells):  # stable ids: same source, same file
            cell["id"] = f"{name[:2]}-{i:02d}"
        nbformat.write(nb, os.path.join(root, f"{name}.ipynb"))
        print("wrote", name)


if __name__ == "__main__":
    main(sys.argv[1:])
