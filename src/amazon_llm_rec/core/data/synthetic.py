"""A seeded synthetic Amazon-2018-format category: the embedded default when no real files exist.

SYNTHETIC DATA. The products, reviewers and reviews are invented. They carry learnable structure
(reviewers who prefer a domain, a brand and a product series; complementary next purchases along
a kit of product types; a popularity skew) and the mess the paper cleans (unverified and duplicate
reviews, missing or empty titles, HTML entities, digits and symbols, non-English tokens, reviewers
with fewer than five products, a few malformed lines), in exactly the published file format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

DOMAINS: dict[str, list[str]] = {
    "Soldering": ["Soldering Iron", "Solder Wire", "Flux Pen", "Tip Cleaner", "Desoldering Pump",
                  "Helping Hands", "Heat Shrink Tubing", "Fume Extractor"],
    "Lab Glassware": ["Beaker Set", "Erlenmeyer Flask", "Graduated Cylinder", "Test Tube Rack",
                      "Pipette Bulb", "Petri Dish", "Funnel", "Wash Bottle"],
    "Safety": ["Nitrile Gloves", "Safety Glasses", "Ear Plugs", "Dust Mask", "Face Shield",
               "Hard Hat", "Knee Pads", "Reflective Vest"],
    "Abrasives": ["Sanding Disc", "Sanding Roll", "Grinding Wheel", "Flap Disc", "Polishing Pad",
                  "Wire Brush", "Sanding Sponge", "Cutoff Wheel"],
    "Adhesives": ["Epoxy Glue", "Super Glue", "Duct Tape", "Masking Tape", "Glue Gun",
                  "Glue Sticks", "Thread Locker", "Silicone Sealant"],
    "Measuring": ["Digital Caliper", "Tape Measure", "Laser Level", "Multimeter", "Thermometer",
                  "Feeler Gauge", "Steel Ruler", "Moisture Meter"],
}
BRANDS: dict[str, list[str]] = {
    "Soldering": ["Voltix", "Hakumi", "Solderpro", "Weldon"],
    "Lab Glassware": ["Pyrexa", "Labcraft", "Kimble", "Glassco"],
    "Safety": ["Guardwell", "Shieldon", "Safemax", "Armorline"],
    "Abrasives": ["Gritmaster", "Norcut", "Abrasix", "Sandwell"],
    "Adhesives": ["Gorillex", "Stickwell", "Bondtite", "Tapeco"],
    "Measuring": ["Mitumark", "Precisa", "Levelon", "Gaugeline"],
}
SERIES = ["Pro", "Classic", "Ultra", "Eco"]
SIZES = ["Small", "Medium", "Large", "3/8 Inch", "100 Count", "12 oz", "60W", "2 Pack"]
FOREIGN = ["Qualität", "Précision", "Werkzeug", "Calidad", "Outillage"]
SYMBOLS = ["&amp;", "&quot;Heavy Duty&quot;", "#1", "®", "™", "(2019 Model)", "- 50PCS", "!!"]


@dataclass(frozen=True)
class Product:
    """One invented product."""

    asin: str
    domain: str
    kind: int
    brand: str
    series: str
    title: str


def _catalog(rng: np.random.Generator) -> list[Product]:
    products = []
    for domain, kinds in DOMAINS.items():
        for kind_idx, kind in enumerate(kinds):
            for brand in BRANDS[domain]:
                for series in rng.choice(SERIES, size=2, replace=False):
                    title = f"{brand} {series} {kind}"
                    if rng.random() < 0.3:
                        title = f"{title} {SIZES[int(rng.integers(len(SIZES)))]}"
                    extra = rng.random()
                    if extra < 0.15:
                        title = f"{title} {SYMBOLS[int(rng.integers(len(SYMBOLS)))]}"
                    elif extra < 0.22:
                        title = f"{title} {FOREIGN[int(rng.integers(len(FOREIGN)))]}"
                    asin = f"B0SYN{len(products):05d}"
                    products.append(Product(asin, domain, kind_idx, brand, str(series), title))
    return products


def _meta_records(products: list[Product], rng: np.random.Generator) -> list[dict[str, Any]]:
    records = []
    for p in products:
        rec: dict[str, Any] = {
            "category": ["Industrial & Scientific (synthetic)", p.domain.replace("&", "&amp;")],
            "description": [f"Synthetic product for the demo: {p.title}."],
            "title": p.title,
            "brand": p.brand,
            "also_buy": [],
            "price": f"${rng.uniform(3, 120):.2f}",
            "asin": p.asin,
        }
        roll = rng.random()
        if roll < 0.03:
            rec.pop("title")  # missing title, recovered from a duplicate metadata row below
            records.append(rec)
            records.append({**rec, "title": p.title})
            continue
        if roll < 0.05:
            rec["title"] = ""  # empty title, filled from brand and category
        elif roll < 0.06:
            rec["title"] = '<span class="a-size-medium a-color-secondary"'  # scraped junk
        records.append(rec)
    return records


def _user_sequence(
    products: list[Product], index: dict[tuple[str, int], list[int]], weights: np.ndarray,
    rng: np.random.Generator, length: int,
) -> list[int]:
    domains = list(DOMAINS)
    fav_domain = domains[int(rng.integers(len(domains)))]
    fav_brand = BRANDS[fav_domain][int(rng.integers(4))]
    kind = int(rng.integers(len(DOMAINS[fav_domain])))
    seq: list[int] = []
    for _ in range(length * 3):
        if len(seq) == length:
            break
        roll = rng.random()
        if roll < 0.12:  # an off-profile purchase, drawn by popularity
            pick = int(rng.choice(len(products), p=weights))
        else:
            kind = (kind + 1) % len(DOMAINS[fav_domain])  # complementary next purchase
            pool = index[(fav_domain, kind)]
            same_brand = [i for i in pool if products[i].brand == fav_brand]
            choices = same_brand if rng.random() < 0.75 else pool
            w = weights[choices] / weights[choices].sum()
            pick = int(rng.choice(choices, p=w))
        if pick not in seq:
            seq.append(pick)
    return seq


def generate(num_reviewers: int = 700, seed: int = 7, start_time: int = 1_420_070_400) -> tuple[list[Any], list[Any]]:
    """Return (review lines, metadata records) of a deterministic synthetic category."""
    rng = np.random.default_rng(seed)
    products = _catalog(rng)
    ranks = rng.permutation(len(products)) + 1
    weights = 1.0 / ranks**0.8
    weights /= weights.sum()
    index: dict[tuple[str, int], list[int]] = {}
    for i, p in enumerate(products):
        index.setdefault((p.domain, p.kind), []).append(i)
    reviews: list[Any] = []
    for u in range(num_reviewers):
        short = rng.random() < 0.15
        length = int(rng.integers(2, 5)) if short else int(rng.integers(5, 13))
        seq = _user_sequence(products, index, weights, rng, length)
        t = start_time + int(rng.integers(0, 400)) * 86_400
        for item in seq:
            t += int(rng.integers(1, 60)) * 86_400
            rec = {
                "overall": float(rng.integers(3, 6)),
                "verified": bool(rng.random() > 0.1),
                "reviewTime": "",
                "reviewerID": f"ASYN{u:06d}",
                "asin": products[item].asin,
                "reviewerName": f"Reviewer {u}",
                "reviewText": "Synthetic review.",
                "summary": "Synthetic",
                "unixReviewTime": t,
            }
            if rng.random() < 0.05:
                rec.pop("reviewText")  # missing optional field
            reviews.append(rec)
            if not rec["verified"]:  # unverified reviews do not count: add the verified purchase too
                reviews.append({**rec, "verified": True, "unixReviewTime": t + 3600})
            if rng.random() < 0.05:  # duplicate (reviewer, product) pair, later in time
                reviews.append({**rec, "verified": True, "unixReviewTime": t + 86_400})
    for pos in (len(reviews) // 3, 2 * len(reviews) // 3):
        reviews.insert(pos, json.dumps(reviews[pos])[:40])  # a truncated, malformed line
    return reviews, _meta_records(products, rng)
