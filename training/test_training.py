"""Tests for the training code: /usr/bin/python3 -m unittest training/test_training.py (about 20 s)."""
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402
from classify import classify, connected_components  # noqa: E402
from models import DEFAULT_CONFIG, build_models, count_parameters  # noqa: E402
from pngio import read_png, write_png  # noqa: E402
from schedule import alphas_cumprod, leading_timesteps  # noqa: E402
from tokenizer import BOS, EOS, ClipTokenizer, bytes_to_unicode, write_examples  # noqa: E402
from weights import load_models, save_weights  # noqa: E402

TOK_DIR = os.path.join(HERE, 'tokenizer')
torch.set_num_threads(1)


class TokenizerTest(unittest.TestCase):
    def setUp(self):
        self.tok = ClipTokenizer(TOK_DIR)
        with open(os.path.join(TOK_DIR, 'vocab.json'), encoding='utf-8') as f:
            self.vocab = json.load(f)

    def test_vocab_layout_is_clip(self):
        order = sorted(self.vocab, key=self.vocab.get)
        chars = list(bytes_to_unicode().values())
        self.assertEqual(order[:256], chars)
        self.assertEqual(order[256:512], [c + '</w>' for c in chars])
        self.assertEqual(order[-2:], [BOS, EOS])
        self.assertEqual(self.vocab['a</w>'], 320)  # same id as in openai's CLIP vocabulary
        with open(os.path.join(TOK_DIR, 'merges.txt'), encoding='utf-8') as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], '#version: 0.2')
        # one vocabulary entry per merge, in merge order, between the byte tokens and the specials
        self.assertEqual(order[512:-2], [''.join(l.split()) for l in lines[1:]])

    def test_every_caption_word_is_one_token(self):
        for w in data.CAPTION_WORDS:
            self.assertEqual(self.tok.tokenize(w), [self.vocab[w + '</w>']], w)

    def test_caption_and_empty_prompt(self):
        ids = self.tok('a red circle on a blue background')
        self.assertEqual(len(ids), 77)
        self.assertEqual(ids[:9], [self.tok.bos] + [self.vocab[w + '</w>'] for w in
                                                    'a red circle on a blue background'.split()] + [self.tok.eos])
        self.assertEqual(set(ids[9:]), {self.tok.eos})
        self.assertEqual(self.tok(''), [self.tok.bos] + [self.tok.eos] * 76)

    def test_normalisation_truncation_and_bytes(self):
        self.assertEqual(self.tok('  A  RED\tcircle '), self.tok('a red circle'))
        long = self.tok(' '.join(['red'] * 100))
        self.assertEqual(long, [self.tok.bos] + [self.vocab['red</w>']] * 75 + [self.tok.eos])
        # unknown words fall back to byte tokens: 'é' is two UTF-8 bytes
        self.assertEqual(self.tok.tokenize('é'), [self.vocab['Ã'], self.vocab['©</w>']])

    def test_examples_file_is_current(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'examples.json')
            write_examples(path, TOK_DIR)
            with open(path, encoding='utf-8') as f, open(os.path.join(HERE, 'tokenizer-examples.json'),
                                                          encoding='utf-8') as g:
                self.assertEqual(json.load(f), json.load(g))


class DataTest(unittest.TestCase):
    def test_render_range_determinism_and_labels(self):
        a, caps, (s, o, b) = data.batch(64, torch.Generator().manual_seed(3))
        a2, caps2, _ = data.batch(64, torch.Generator().manual_seed(3))
        self.assertEqual(tuple(a.shape), (64, 3, 128, 128))
        self.assertTrue(torch.equal(a, a2))
        self.assertEqual(caps, caps2)
        self.assertGreaterEqual(a.min().item(), -1.0)
        self.assertLessEqual(a.max().item(), 1.0)
        self.assertFalse(bool((o == b).any()))
        self.assertTrue(bool((o < len(data.OBJECT_COLOURS)).all()))
        self.assertTrue(caps[0].startswith('a ') and caps[0].endswith(' background'))

    def test_classifier_is_exact_on_training_images(self):
        imgs, _, (s, o, b) = data.batch(90, torch.Generator().manual_seed(11))
        for i in range(90):
            r = classify(imgs[i].numpy(), data.SHAPES[s[i]], data.COLOURS[o[i]], data.COLOURS[b[i]])
            self.assertTrue(r['correct'], (i, r))
            self.assertTrue(r['background_correct'], (i, r))

    def test_classifier_counts_repeated_objects(self):
        g = torch.Generator().manual_seed(5)
        lab = (torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([2, 2]))
        two = torch.cat(list(data.render(*lab, g)), dim=-1)  # two red circles side by side
        r = classify(two.numpy(), 'circle', 'red', 'blue')
        self.assertEqual(r['count'], 2)
        self.assertFalse(r['correct'])
        self.assertEqual([o['shape'] for o in r['objects']], ['circle', 'circle'])

    def test_connected_components_diagonal(self):
        m = np.zeros((5, 5), dtype=bool)
        m[0, 0] = m[1, 1] = m[2, 2] = True  # 8-connected diagonal: one component
        m[4, 0] = m[4, 1] = True
        m[0, 4] = True
        sizes = sorted(len(ys) for ys, _ in connected_components(m))
        self.assertEqual(sizes, [1, 2, 3])


class ModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        cls.tok = ClipTokenizer(TOK_DIR)
        cls.vae, cls.text, cls.unet = build_models(DEFAULT_CONFIG, cls.tok.vocab_size, cls.tok.eos)

    def test_parameter_counts(self):
        self.assertEqual(count_parameters(self.unet), 2765540)
        self.assertEqual(count_parameters(self.vae.encoder), 472520)
        self.assertEqual(count_parameters(self.vae.decoder), 490499)
        self.assertEqual(count_parameters(self.text), 141376)

    def test_shapes_and_diffusers_names(self):
        with torch.no_grad():
            ids = torch.tensor([self.tok('a red circle on a blue background'), self.tok('')])
            h, pooled = self.text(ids)
            self.assertEqual(tuple(h.shape), (2, 77, 64))
            # pooler_output = hidden state at the first EOS (index 9 and 1)
            self.assertTrue(torch.equal(pooled, torch.stack([h[0, 8], h[1, 1]])))
            for hw in ((16, 16), (24, 40)):
                out = self.unet(torch.randn(2, 4, *hw), torch.tensor([999, 0]), h)
                self.assertEqual(tuple(out.shape), (2, 4) + hw)
            mean, logvar = self.vae.encode(torch.zeros(1, 3, 128, 192))
            self.assertEqual(tuple(mean.shape), (1, 4, 16, 24))
            self.assertEqual(tuple(self.vae.decoder(mean).shape), (1, 3, 128, 192))
        names = dict(self.unet.named_modules())
        for n in ('conv_in', 'time_embedding.linear_1', 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k',
                  'down_blocks.0.downsamplers.0.conv', 'mid_block.attentions.0.proj_in',
                  'up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0', 'up_blocks.0.upsamplers.0.conv',
                  'up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2', 'conv_norm_out', 'conv_out'):
            self.assertIn(n, names)

    def test_causal_text_encoder(self):
        # changing a later token must not change earlier hidden states
        with torch.no_grad():
            a = self.tok('a red circle on a blue background')
            b = list(a)
            b[5] = self.tok.tokenize('green')[0]
            ha, _ = self.text(torch.tensor([a]))
            hb, _ = self.text(torch.tensor([b]))
        self.assertTrue(torch.allclose(ha[0, :5], hb[0, :5]))
        self.assertFalse(torch.allclose(ha[0, 5], hb[0, 5]))

    def test_weights_roundtrip(self):
        cfg = json.loads(json.dumps(DEFAULT_CONFIG))
        cfg['text'].update(vocab_size=self.tok.vocab_size, eos_id=self.tok.eos, bos_id=self.tok.bos)
        cfg['scaling_factor'] = 0.5
        arrays = {}
        for prefix, m in (('vae', self.vae), ('text', self.text), ('unet', self.unet)):
            arrays.update({f'{prefix}.{k}': v.numpy() for k, v in m.state_dict().items()})
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'm.npz')
            save_weights(path, arrays, cfg)
            config, vae, text, unet = load_models(path)
        self.assertEqual(config['scaling_factor'], 0.5)
        for k, v in self.unet.state_dict().items():
            self.assertTrue(torch.equal(v, unet.state_dict()[k]), k)


class OnnxWeightsTest(unittest.TestCase):
    """onnx_weights.py: the parameters read back from an export are the module's own, bit for bit."""

    def test_roundtrip_through_export(self):
        from export import onnx_export
        from onnx_weights import onnx_state_dict
        torch.manual_seed(1)
        tok = ClipTokenizer(TOK_DIR)
        _vae, text, unet = build_models(DEFAULT_CONFIG, tok.vocab_size, tok.eos)
        with torch.no_grad():
            # Distinct values everywhere in the UNet (norm scales and shifts too); the text encoder keeps its initial
            # LayerNorm ones and zeros, which the exporter shares between layers through Identity nodes.
            for param in unet.parameters():
                param.uniform_(-0.5, 0.5)
        ids = torch.tensor([tok('a red circle'), tok('')], dtype=torch.int32)
        with tempfile.TemporaryDirectory() as d:
            onnx_export(text, (ids,), os.path.join(d, 'text.onnx'), ['input_ids'],
                        ['last_hidden_state', 'pooler_output'], {'input_ids': {0: 'batch'}})
            onnx_export(unet, (torch.randn(2, 4, 16, 16), torch.tensor([999, 1]), torch.randn(2, 77, 64)),
                        os.path.join(d, 'unet.onnx'), ['sample', 'timestep', 'encoder_hidden_states'], ['out_sample'],
                        {'sample': {0: 'batch', 2: 'height', 3: 'width'}, 'timestep': {0: 'batch'}})
            for module, name in ((text, 'text.onnx'), (unet, 'unet.onnx')):
                state = onnx_state_dict(os.path.join(d, name))
                own = module.state_dict()
                self.assertEqual(sorted(state), sorted(own), name)
                for k, v in own.items():
                    self.assertTrue(torch.equal(v, state[k]), f'{name}: {k}')

    def test_shipped_model_loads(self):
        from onnx_weights import load_onnx_models
        config, text, unet = load_onnx_models(os.path.join(os.path.dirname(HERE), 'models', 'shapes-128'))
        self.assertEqual(count_parameters(text), 141376)
        self.assertEqual(count_parameters(unet), 2765540)
        self.assertEqual(config['unet']['block_out_channels'], [64, 96])


class ScheduleAndPngTest(unittest.TestCase):
    def test_sd_schedule(self):
        acp = alphas_cumprod()
        self.assertAlmostEqual(acp[0].item(), 1 - 0.00085, places=7)
        # sqrt = 0.068265, the terminal signal level of SD 1.x (Lin et al., "Common Diffusion Noise Schedules are Flawed")
        self.assertAlmostEqual(acp[-1].item() ** 0.5, 0.068265, places=6)
        ts = leading_timesteps(30)
        self.assertEqual((ts[0], ts[1], ts[-1], len(ts)), (958, 925, 1, 30))

    def test_png_roundtrip(self):
        img = (np.arange(7 * 5 * 3) % 256).astype(np.uint8).reshape(7, 5, 3)
        with tempfile.TemporaryDirectory() as d:
            write_png(os.path.join(d, 'x.png'), img)
            self.assertTrue(np.array_equal(read_png(os.path.join(d, 'x.png')), img))


if __name__ == '__main__':
    unittest.main()
