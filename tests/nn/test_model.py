"""The model contract: every model class of minivid survives minivid.save_model / minivid.load_model with identical
outputs, and a folder that is missing, foreign or inconsistent is a clear error naming the folder."""

import json
from dataclasses import dataclass

import pytest
import torch

import minivid
from minivid.autoencoders import (CausalVAE, CausalVAEConfig, CogVideoXVAE, CogVideoXVAEConfig, PVDMAutoencoder, PVDMAutoencoderConfig, ReducioConfig,
                                  ReducioVAE, VAE2D, VAE2DConfig)
from minivid.nn import Model, ModelConfig, load_model, model_classes, read_model_config, save_model
from minivid.conditioning import SemanticImageEncoder, SemanticImageEncoderConfig, TextEncoder, TextEncoderConfig
from minivid.transformers import (ExpertTransformer, ExpertTransformerConfig, ImageDiT, Latte, LatteConfig, ReducioDiT,
                                  ReducioDiTConfig, STDiT, STDiTConfig)
from minivid.conditioning.motion import MotionGuidance, MotionGuidanceConfig
from minivid.pipeline.image2video import ImageToVideo, ImageToVideoConfig
from minivid.pipeline.tora import Tora, ToraConfig
from minivid.pipeline.system import System, SystemConfig
from minivid.pipeline.text2video import TextToVideo, TextToVideoConfig
from minivid.unets import PlaneUNet, PlaneUNetConfig, VideoUNet, VideoUNetConfig

G = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, generator=G)


def planes():
    return (rand(2, 3, 4, 4), rand(2, 3, 4, 4), rand(2, 3, 4, 4))


LATTE = LatteConfig(variant=3, in_channels=3, num_frames=4, size=8, patch_size=2, dim=32, depth=2, heads=4,
                    num_classes=3, attention_backend="math")
# class name -> (build, call): every model of minivid, at a tiny size, with the inputs of its forward
CASES = {
    "VideoUNet": (lambda: VideoUNet(VideoUNetConfig(channels=8, channel_mult=(1, 2), heads=2, norm_groups=4,
                                                    num_classes=3)),
                  lambda m: m(rand(2, 3, 2, 8, 8), torch.tensor([3, 70]), torch.tensor([0, 3]))),
    "PlaneUNet": (lambda: PlaneUNet(PlaneUNetConfig(in_channels=3, channels=8, channel_mult=(1, 2), heads=2,
                                                    norm_groups=4)),
                  lambda m: torch.cat([p.flatten() for p in m(planes(), torch.tensor([3, 70]), cond=planes())])),
    "Latte": (lambda: Latte(LATTE), lambda m: m(rand(2, 3, 4, 8, 8), torch.tensor([3, 70]), torch.tensor([1, 3]))),
    "ImageDiT": (lambda: ImageDiT(LATTE), lambda m: m(rand(2, 3, 8, 8), torch.tensor([3, 70]), torch.tensor([1, 3]))),
    "PVDMAutoencoder": (lambda: PVDMAutoencoder(PVDMAutoencoderConfig(dim=32, heads=4, projector_heads=4)),
                        lambda m: m.reconstruct(rand(2, 3, 4, 8, 8).tanh())),
    "VAE2D": (lambda: VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4)),
              lambda m: m.reconstruct(rand(2, 3, 2, 8, 8).tanh())),
    "CausalVAE": (lambda: CausalVAE(CausalVAEConfig(channels=8, num_res_blocks=1, norm_groups=4)),
                  lambda m: m.reconstruct(rand(1, 3, 5, 16, 16).tanh())),
    "CogVideoXVAE": (lambda: CogVideoXVAE(CogVideoXVAEConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                                             norm_groups=4, latent_channels=4, temporal_factor=2)),
                     lambda m: m.reconstruct(rand(1, 3, 5, 8, 8).tanh())),
    "ReducioVAE": (lambda: ReducioVAE(ReducioConfig(channels=8, num_res_blocks=1, norm_groups=4, content_channels=8,
                                                    content_num_res_blocks=1, fusion_head_dim=16,
                                                    fusion_spatial_pe=True)),
                   lambda m: m.reconstruct(rand(1, 3, 4, 32, 32).tanh())),
    "ExpertTransformer": (lambda: ExpertTransformer(ExpertTransformerConfig(in_channels=4, heads=2, head_dim=16, depth=2,
                                                                            time_embed_dim=16, text_dim=12,
                                                                            max_text_len=5, base_size=(4, 4),
                                                                            attention_backend="math")),
                          lambda m: m(rand(2, 4, 2, 4, 4), torch.tensor([3, 70]), rand(2, 5, 12))),
    "TextEncoder": (lambda: TextEncoder(TextEncoderConfig(d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)),
                    lambda m: m(["a red square moves left", "blue"])[0]),
    "STDiT": (lambda: STDiT(STDiTConfig(in_channels=4, patch_size=2, dim=32, heads=2, depth=2, text_dim=12,
                                        attention_backend="math")),
              lambda m: m(rand(2, 4, 4, 8, 8), torch.tensor([3, 70]), rand(2, 5, 12),
                          torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool())),
    "ReducioDiT": (lambda: ReducioDiT(ReducioDiTConfig(in_channels=4, dim=32, heads=2, depth=2, cond_dim=12,
                                                       size_embedding=True, deepstack=True, attention_backend="math")),
                   lambda m: m(rand(2, 4, 4, 4, 4), torch.tensor([3, 70]), rand(2, 5, 12),
                               torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool(), content=rand(2, 4, 4, 12),
                               size=torch.tensor([[256.0, 128.0], [128.0, 128.0]]))),
    "SemanticImageEncoder": (lambda: SemanticImageEncoder(SemanticImageEncoderConfig(image_size=16, patch_size=8, width=16,
                                                                                      layers=1, heads=2, embed_dim=8)),
                             lambda m: m(rand(2, 3, 20, 24).tanh())[0]),
    "TextToVideo": (lambda: TextToVideo(TextToVideoConfig(
        text=TextEncoderConfig(max_length=24, pad_to_max_length=True, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                               num_heads=2),
        transformer=ExpertTransformerConfig(in_channels=4, heads=2, head_dim=16, depth=1, time_embed_dim=16,
                                            text_dim=16, max_text_len=24, base_size=(4, 4),
                                            attention_backend="math"))),
                    lambda m: m(rand(2, 4, 2, 4, 4), torch.tensor([3, 70]),
                                *m.tokenize(["a red circle moves up", "a blue square bounces"]))),
    "ImageToVideo": (lambda: ImageToVideo(ImageToVideoConfig(
        semantic=SemanticImageEncoderConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2, embed_dim=8),
        dit=ReducioDiTConfig(in_channels=4, patch_size=2, dim=32, depth=1, heads=2, cond_dim=16,
                             attention_backend="math"), content_grid=(4, 4))),
                     lambda m: m(rand(2, 4, 2, 4, 4), torch.tensor([3, 70]), rand(2, 3, 16, 16).tanh(),
                                 rand(2, 16, 4), torch.tensor([False, True]))),
    "MotionGuidance": (lambda: MotionGuidance(MotionGuidanceConfig(motion_channels=4, dim=16, depth=2, patch_size=2,
                                                                    motion_dim=8, fuser="adanorm")),
                       lambda m: torch.cat([f.flatten() for f in m(rand(2, 4, 3, 4, 4))])),
    "Tora": (lambda: Tora(ToraConfig(base=STDiTConfig(in_channels=4, patch_size=2, dim=16, depth=2, heads=2, text_dim=8),
                                     motion=MotionGuidanceConfig(motion_channels=4, dim=16, depth=2, patch_size=2,
                                                                 motion_dim=8, fuser="cross_attention"))),
             lambda m: m(rand(2, 4, 3, 4, 4), torch.tensor([3, 70]), motion=rand(2, 4, 3, 4, 4))),
    "System": (lambda: System(SystemConfig(
        text=TextEncoderConfig(max_length=24, pad_to_max_length=True, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                               num_heads=2),
        transformer=ExpertTransformerConfig(in_channels=5, out_channels=4, heads=2, head_dim=16, depth=2,
                                            time_embed_dim=16, text_dim=16, max_text_len=24, base_size=(4, 4),
                                            attention_backend="math"),
        motion=MotionGuidanceConfig(motion_channels=2, motion_dim=8, heads=2))),
               lambda m: m(rand(2, 4, 3, 4, 4), torch.tensor([3, 70]),
                           *m.tokenize(["a red circle moves up", "a blue square bounces"]),
                           given_frames=torch.tensor([[True, False, False], [False] * 3]), motion=rand(2, 2, 3, 4, 4))),
}


def test_every_model_class_of_minivid_has_a_round_trip_case():
    """A new model class must join CASES (and so this contract) to pass."""
    ours = {name for name, cls in model_classes().items() if cls.__module__.startswith("minivid.")}
    assert ours == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_model_of_save_model_gives_identical_outputs(name, tmp_path):
    build, call = CASES[name]
    torch.manual_seed(1)
    model = build()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised heads and gates would make any two models agree
            p.add_(0.05 * torch.randn(p.shape, generator=G))
    folder = save_model(model, tmp_path / name, metadata={"step": 12})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    torch.manual_seed(2)  # another init: every weight must come from the file
    loaded = minivid.load_model(folder)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    model.eval()
    with torch.no_grad():
        G.manual_seed(3)  # the same inputs for both
        expected = call(model)
        G.manual_seed(3)
        assert torch.equal(call(loaded), expected)
    cls, config, meta = read_model_config(folder)
    assert cls is type(model) and config == model.config and meta == {"step": 12}


@dataclass
class TinyConfig(ModelConfig):
    width: int = 3
    sizes: tuple[int, ...] = (1, 2)


class Tiny(Model):
    """A model defined outside minivid follows the same contract."""

    config_class = TinyConfig

    def __init__(self, config: TinyConfig | None = None, **fields):
        super().__init__(config, **fields)
        self.linear = torch.nn.Linear(self.config.width, 1)

    def forward(self, x):
        return self.linear(x)


def test_a_model_defined_outside_minivid_round_trips_once_imported(tmp_path):
    m = Tiny(width=4, sizes=(3, 4))
    folder = save_model(m, tmp_path / "tiny")
    loaded = load_model(folder)
    assert loaded.config == TinyConfig(4, (3, 4)) and isinstance(loaded.config.sizes, tuple)  # JSON list -> tuple
    x = torch.randn(2, 4)
    assert torch.equal(loaded(x), m(x))
    data = json.loads((folder / "config.json").read_text())
    data["module"] = "somebody.elses.models"  # a class nobody imported
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a registered minivid model.*must be imported before load_model"):
        load_model(folder)


def test_the_constructor_takes_a_config_or_its_fields():
    assert Tiny(TinyConfig(width=5)).config.width == 5 and Tiny(width=6).config.width == 6
    with pytest.raises(ValueError, match="not both"):
        Tiny(TinyConfig(), width=2)
    with pytest.raises(TypeError, match="Tiny takes a TinyConfig, got a LatteConfig"):
        Tiny(LATTE)
    with pytest.raises(TypeError, match="save_model takes a minivid model"):
        save_model(torch.nn.Linear(2, 2), "unused")


def test_missing_foreign_and_inconsistent_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no model folder at '{tmp_path / 'nope'}'"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path / 'empty'}' has no config.json"):
        load_model(tmp_path / "empty")
    foreign = tmp_path / "hf"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"architectures": ["T5EncoderModel"], "d_model": 512}))
    with pytest.raises(ValueError, match=f"is not a minivid model config.*the folder '{foreign}' was not written"):
        load_model(foreign)
    (foreign / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_model(foreign)

    folder = save_model(Tiny(), tmp_path / "tiny")
    data = json.loads((folder / "config.json").read_text())
    for edit, error, match in (
            ({"class": "Nonexistent", "module": "minivid.unets"}, ValueError, "'Nonexistent'.*minivid's models are"),
            ({"config": {"width": 3, "depht": 2}}, ValueError, r"unknown TinyConfig field\(s\) \['depht'\]"),
            ({"config": {"width": 5}}, ValueError, f"the weights in '{folder}' do not fit a Tiny"),
            ({"format_version": 99}, ValueError, "format_version 99, newer than this minivid's 1")):
        (folder / "config.json").write_text(json.dumps({**data, **edit}))
        with pytest.raises(error, match=match):
            load_model(folder)
    (folder / "config.json").write_text(json.dumps(data))
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has config.json but no model.safetensors"):
        load_model(folder)


def test_a_bad_device_is_refused_before_the_folder_is_read(tmp_path):
    """The device is checked first: a missing folder with device="tpu" reports the device, not the folder."""
    with pytest.raises(ValueError, match="device='tpu' is invalid: expected 'cpu', 'cuda' or 'cuda:N'"):
        load_model(tmp_path / "nope", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' is invalid: CUDA is not available here"):
            load_model(tmp_path / "nope", device="cuda")
    folder = save_model(Tiny(), tmp_path / "tiny")
    assert next(load_model(folder, device=torch.device("cpu")).parameters()).device.type == "cpu"


def test_a_minivid_class_is_found_by_name_and_its_module_imported_on_demand(tmp_path):
    """config.json names the class and its module; load_model imports only modules inside minivid."""
    folder = save_model(VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4)), tmp_path / "vae")
    data = json.loads((folder / "config.json").read_text())
    assert (data["class"], data["module"]) == ("VAE2D", "minivid.autoencoders.vae2d")
    data["module"] = "os"  # not minivid's: never imported, and not a registered class
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'VAE2D' \\(module 'os'\\), which is not a registered minivid model"):
        load_model(folder)
