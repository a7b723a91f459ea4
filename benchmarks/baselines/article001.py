"""Article 001's RLE functions, transcribed as published.

Source: "Kaggle肾小球图像分割比赛全解析" (a walkthrough of the Kaggle
"HuBMAP: Hacking the Kidney" competition), ../shared/articles/001_f9784c57cb4b1ec2.txt,
functions ``rle2mask`` and ``mask2rle`` (the article credits Paulo Pinto's
Kaggle notebook "RLE functions - Run Lenght Encode & Decode" and
https://blog.csdn.net/qq_35985044/article/details/104332577). The code is
unchanged; the comments are shortened translations of the article's.

Note the article's conventions: ``rle2mask`` takes ``shape`` as
``(width, height)`` and returns a transposed (Fortran-ordered) view;
``mask2rle`` upcasts the flattened mask to int64 in ``np.concatenate``.
"""

import numpy as np


def rle2mask(mask_rle, shape):
    # shape is (width, height). The RLE string holds start/length pairs.
    s = mask_rle.split()

    # Every second token is a start, the others are lengths.
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]

    # Starts in the CSV are 1-indexed.
    starts -= 1
    ends = starts + lengths

    # A blank image the size of the original.
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)

    # 1 is mask, 0 is background.
    for lo, hi in zip(starts, ends, strict=False):
        img[lo:hi] = 1

    # RLE runs top to bottom, then left to right, so reshape to
    # (width, height) and transpose to (height, width).
    return img.reshape(shape).T


def mask2rle(img):
    # Flatten top to bottom, then left to right.
    pixels = img.T.flatten()

    # Pad with a 0 at each end.
    pixels = np.concatenate([[0], pixels, [0]])

    # Positions where the value changes (shifted comparison); +1 to align.
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1

    # runs[1::2] are run ends, runs[::2] run starts: store the lengths.
    runs[1::2] -= runs[::2]

    # Join the numbers with spaces.
    return " ".join(str(x) for x in runs)
