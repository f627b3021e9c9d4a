"""Unit tests of scenes.py: /usr/bin/python3 -m unittest training/test_scenes.py"""
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import scenes  # noqa: E402
from tokenizer import ClipTokenizer, build_files  # noqa: E402


class ScenesTest(unittest.TestCase):
    def setUp(self):
        self.g = torch.Generator().manual_seed(11)
        self.t, self.scenes = scenes.sample_scenes(256, self.g)

    def test_kinds_and_captions(self):
        kinds = {s['kind'] for s in self.scenes}
        self.assertEqual(kinds, set(scenes.KINDS))
        with tempfile.TemporaryDirectory() as d:
            build_files(d, scenes.CAPTION_WORDS)
            tok = ClipTokenizer(d)
            for s in self.scenes:
                words = scenes.caption(s).split()
                ids = tok(' '.join(words))
                # BOS, one token per word, EOS
                self.assertEqual(ids[len(words) + 1], tok.eos, scenes.caption(s))
                self.assertNotIn(tok.eos, ids[1:len(words) + 1])

    def test_relation_matches_geometry(self):
        for i, s in enumerate(self.scenes):
            if s['kind'] != 'relation':
                continue
            x0, x1 = self.t['cx'][i, :2].tolist()
            y0, y1 = self.t['cy'][i, :2].tolist()
            # object 0 is left of / above object 1 along the dominant axis
            if s['relation'] in ('left of', 'right of'):
                self.assertLess(x0, x1)
                self.assertGreater(x1 - x0, abs(y1 - y0))
            else:
                self.assertLess(y0, y1)
                self.assertGreater(y1 - y0, abs(x1 - x0))
            first = s['objects'][s['first']]
            self.assertTrue(scenes.caption(s).startswith(f'a {first["size"] + " " if first["size"] else ""}{first["colour"]}'))
            self.assertNotEqual(s['objects'][0]['colour'], s['objects'][1]['colour'])

    def test_object_colours_differ_from_background(self):
        for s in self.scenes:
            for o in s['objects']:
                self.assertNotIn(o['colour'], (s['bg'], s['bg2']))

    def test_count_objects_do_not_overlap(self):
        for i, s in enumerate(self.scenes):
            if s['kind'] != 'count':
                continue
            n = len(s['objects'])
            self.assertIn(n, (2, 3))
            for a in range(n):
                for b in range(a + 1, n):
                    d = max(abs(self.t['cx'][i, a] - self.t['cx'][i, b]), abs(self.t['cy'][i, a] - self.t['cy'][i, b]))
                    reach = 0.5 * (self.t["extent"][i, a] + self.t["extent"][i, b]) + 2.0
                    self.assertGreater(float(d), float(reach) - 1e-3)

    def test_render_range(self):
        x = scenes.render(self.t, torch.Generator().manual_seed(1))
        self.assertEqual(tuple(x.shape), (256, 3, 128, 128))
        self.assertGreaterEqual(float(x.min()), -1.0)
        self.assertLessEqual(float(x.max()), 1.0)


if __name__ == '__main__':
    unittest.main()
