"""CLIP-format byte-level BPE tokenizer for the shapes captions.

`build_files(dir)` trains merges on the caption vocabulary and writes vocab.json, merges.txt,
special_tokens_map.json and tokenizer_config.json exactly in the layout of openai/clip-vit-*:
vocab = 256 byte characters (GPT-2 bytes_to_unicode order), the same with '</w>', one token per merge,
then <|startoftext|>, <|endoftext|>. `ClipTokenizer` encodes with CLIP's algorithm (lowest-rank merge
first), 77 ids: BOS, tokens, EOS, padded with EOS.
"""
import json
import os
import re

from data import CAPTION_WORDS

BOS = '<|startoftext|>'
EOS = '<|endoftext|>'
MAX_LENGTH = 77

# CLIP's pre-tokenizer regex with \p{L} / \p{N} approximated by Python's unicode classes.
_PATTERN = re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+",
    re.IGNORECASE,
)


def bytes_to_unicode():
    """GPT-2/CLIP's reversible byte -> printable unicode character table, in its canonical order."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _word_symbols(word):
    enc = bytes_to_unicode()
    chars = [enc[b] for b in word.encode('utf-8')]
    return chars[:-1] + [chars[-1] + '</w>']


def train_merges(words):
    """Plain BPE training: merge the most frequent adjacent pair until every word is one symbol.
    Ties break on the pair itself so the result is deterministic."""
    corpus = {w: _word_symbols(w) for w in sorted(set(words))}
    merges = []
    while True:
        counts = {}
        for syms in corpus.values():
            for pair in zip(syms, syms[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w, syms in corpus.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            corpus[w] = out


def _added_token(content):
    return {'content': content, 'lstrip': False, 'normalized': True, 'rstrip': False, 'single_word': False}


def build_files(directory, words=CAPTION_WORDS):
    os.makedirs(directory, exist_ok=True)
    merges = train_merges(words)
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + '</w>' for c in byte_chars] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), 'duplicate vocabulary entry'
    with open(os.path.join(directory, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(directory, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n')
        for a, b in merges:
            f.write(f'{a} {b}\n')
    with open(os.path.join(directory, 'special_tokens_map.json'), 'w', encoding='utf-8') as f:
        json.dump({'bos_token': _added_token(BOS), 'eos_token': _added_token(EOS), 'pad_token': EOS,
                   'unk_token': _added_token(EOS)}, f, indent=2)
    config = {
        'add_prefix_space': False,
        'bos_token': dict(_added_token(BOS), __type='AddedToken'),
        'clean_up_tokenization_spaces': True,
        'do_lower_case': True,
        'eos_token': dict(_added_token(EOS), __type='AddedToken'),
        'errors': 'replace',
        'model_max_length': MAX_LENGTH,
        'pad_token': EOS,
        'tokenizer_class': 'CLIPTokenizer',
        'unk_token': dict(_added_token(EOS), __type='AddedToken'),
    }
    with open(os.path.join(directory, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(config, f, indent=2)
    return len(vocab)


class ClipTokenizer:
    def __init__(self, directory):
        with open(os.path.join(directory, 'vocab.json'), encoding='utf-8') as f:
            self.encoder = json.load(f)
        with open(os.path.join(directory, 'merges.txt'), encoding='utf-8') as f:
            lines = f.read().split('\n')[1:]
        # CLIP keeps only the first 49152 - 256 - 2 merges of its file.
        pairs = [tuple(l.split()) for l in lines[:49152 - 256 - 2] if l.strip()]
        self.ranks = {p: i for i, p in enumerate(pairs)}
        self.byte_encoder = bytes_to_unicode()
        self.bos = self.encoder[BOS]
        self.eos = self.encoder[EOS]
        self.cache = {}

    @property
    def vocab_size(self):
        return len(self.encoder)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + '</w>']
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float('inf')))
            if best not in self.ranks:
                break
            first, second = best
            out, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    out.extend(word[i:])
                    break
                out.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    out.append(first + second)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        self.cache[token] = word
        return word

    def tokenize(self, text):
        text = re.sub(r'\s+', ' ', text).strip().lower()
        ids = []
        for piece in _PATTERN.findall(text):
            chars = ''.join(self.byte_encoder[b] for b in piece.encode('utf-8'))
            ids.extend(self.encoder[t] for t in self.bpe(chars))
        return ids

    def __call__(self, text):
        """77 ids: BOS, at most 75 tokens (longer prompts are truncated), EOS, EOS padding."""
        ids = [self.bos] + self.tokenize(text)[:MAX_LENGTH - 2] + [self.eos]
        return ids + [self.eos] * (MAX_LENGTH - len(ids))


EXAMPLE_CAPTIONS = (
    'a red circle on a blue background',
    '',
    'a yellow triangle on a purple background',
    '  A  WHITE square\ton a   Gray background ',
    'an orange star on a grey background!',
    'red,green;blue...',
    'a black square on a white background, 4k photo',
    "the triangle's circles aren't squares",
    'café naïve 東京',
    ' '.join(['a green circle'] * 30),
)


def write_examples(path, directory):
    tok = ClipTokenizer(directory)
    examples = [{'text': t, 'input_ids': tok(t)} for t in EXAMPLE_CAPTIONS]
    with open(path, 'w', encoding='utf-8') as f:
        json.dump({'tokenizer': 'training/tokenizer', 'bos': tok.bos, 'eos': tok.eos, 'pad': tok.eos,
                   'examples': examples}, f, ensure_ascii=False, indent=1)
        f.write('\n')


if __name__ == '__main__':
    # Rebuilds the tokenizer files (deterministic) and the reference encodings for the TypeScript tokenizer.
    here = os.path.dirname(os.path.abspath(__file__))
    size = build_files(os.path.join(here, 'tokenizer'))
    write_examples(os.path.join(here, 'tokenizer-examples.json'), os.path.join(here, 'tokenizer'))
    print(f'vocabulary: {size} tokens; wrote tokenizer/ and tokenizer-examples.json')
