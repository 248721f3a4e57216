"""Calibrated synthetic multi-destination trips (Booking.com WSDM WebTour 2021 format).

This is the project's default dataset and quality benchmark. :func:`generate` writes the official
files (``train_set.csv``, ``test_set.csv``, ``ground_truth.csv``) plus the generator's own answer
key (``oracle.parquet``, ``oracle_train.parquet``) and a summary (``generator.json``). The
statistics it is calibrated against live in :mod:`nextdest.data.calibrate`.

Generative story
----------------
World
  * ``n_countries`` hotel countries sit on a 100 x 100 map, grouped into ``Knobs.n_regions``
    regions. Country popularity follows a curve fitted to the real final-country concentration
    (top-1 10.7 %, top-10 60.2 %, ...). The map is drawn by stratified, not iid, draws, because
    how often trips cross a border (and so the one-country share and the previous-city
    baseline) hinges on how close the big countries lie to their neighbours: region centres
    jitter inside the cells of a grid; countries are dealt to regions in popularity rounds (each
    round a permutation of the regions, so every region holds one country of each tier); within
    its region the k-th country's distance from the centre is drawn inside the k-th
    equal-probability stratum of a 2-D normal's distance (sd 6), at a golden-angle spiral
    position, so the region's big country sits in the middle and the others spread round it.
  * ``n_cities`` cities. Each city gets a *target* share of all reservations from a curve through
    the real final-city concentration (:data:`CITY_CURVE`: top-1 1.8 %, top-4 5.7 %, top-100 39 %,
    top-1000 73 %, ...). Cities are dealt to countries, biggest first, to the country with the
    largest remaining share deficit, so country and city marginals agree. A country's cities lie
    in a disc around its centre whose area grows with its city count.
  * Each city has a sparse list of ``K`` candidate next cities: its ``k_near`` nearest cities of
    the same country, the ``k_hub`` most popular cities of its country, and, for each of the
    ``k_cross_countries`` nearest other countries, that country's ``k_cross_hubs`` most popular
    cities plus the ``k_cross_gate`` of its ``n_gateways`` "gateway" cities nearest to the city
    (so border crossings do not all pour into a few hubs). The static affinity of a candidate is
    ``G[c, j] = (1 + d(c, j) / d_ref(c)) ** -dist_power * exp(pair_noise_sd * z(c, j))``:
    ``d_ref`` is the city's local neighbour spacing and ``z`` a standard normal per *unordered*
    pair (symmetric: a strong link is strong both ways, which with the revisit penalty gives the
    "not straight back" second-order structure). Popularity sharpness per city is the job of the
    fitted ``W`` below; the list sizes ``k_near`` / ``k_hub`` set how predictable the next city is
    from the previous one alone (longer lists: flatter).
  * Seasonality: a share ``seasonal_share`` of countries is seasonal (mostly summer, some winter)
    with a popularity factor ``exp(A cos(2 pi (month - peak) / 12))``.
  * Five booker markets (Gondal, Elbonia, The Devilfire Empire, Tcherkistan, Bartovia; these are
    also hotel countries) with row shares 45.9/24.5/20.2/6.9/2.5 % and a destination affinity
    per country: lognormal noise (``market_affinity_sd``) times a boost for the market's own
    region (``market_region_boost``) and its own country (``market_home_boost``), and a taste
    for individual cities (lognormal, ``market_city_sd``) -- which hubs a market favours is
    invisible to a model that ignores the booker country.
  * Affiliates: five big ones holding 57 % of the trips (their mix depends on the market) and a
    Zipf tail, each tail affiliate belonging to one market. Devices: market-specific mixes around
    64.6/28.4/7.0 %.

Users and trips
  * Most users book one trip; some book several (``2 + geometric`` trips). A user keeps their
    market, a favourite destination country (drawn from the market affinity), a device and an
    affiliate habit. ``overlap_share`` of test users also have train trips (the rest of their
    trips), train-only multi-trip users exist too. ``utrip_id = {user_id}_{k}`` with trips of a
    user numbered by start date.
  * Trip length (rows) follows the real shares (4: 45.1 %, 5: 22.9 %, 6: 12.6 %, 7-8: 11.7 %,
    9+: 7.4 %, mean 5.36, max 48). The start date follows the real check-in month mix (July 14.5 %,
    August 19.6 %, ...). Total nights = length + extra nights (Poisson around a length-dependent
    mean, plus a rare long-stay tail), split over the stays with Dirichlet(``nights_alpha``)
    weights (so most stays are one night, a few are long; trip span mode 7). A share
    ``gap_share`` of trips has one gap of a few days between two stays.
  * Every trip has latent state: a direction of travel ``theta``, a momentum strength ``kappa``
    (Gamma(2) with mean ``kappa_mean``), and whether it is a multi-country tour (share
    ``tour_share``): candidates in another country get ``cross_tour`` on a tour, ``cross_home``
    otherwise, both times a fitted ``cross_scale`` (below; 72.2 % of real trips stay in one
    country, :data:`ONE_COUNTRY_SHARE`, the others visit ~2.5 countries).

The walk (vectorised over trips, looping over steps)
  * First city: with probability ``user_fav_start`` a city of the user's favourite country
    (weighted by fitted popularity ``W``), otherwise a city drawn from
    ``W[j] * market_affinity[m, country(j)] * season[country(j), month]``.
  * Each next city ``j`` among the candidates of the previous city ``c`` has weight::

        W[j] * G[c, j]                                   popularity x static affinity
          * exp(kappa * cos(angle(x_j - x_c, v)))        direction momentum, v = unit(theta +
                                                         momentum_last * unit(x_c - x_prevprev))
          * season[country(j), checkin month]            seasonality
          * market_affinity[market, country(j)]          booker market taste (country ...
          * market_city[market, j]                       ... and city)
          * (cross_tour or cross_home) * cross_scale     if j is in another country than c
          * (1 + user_fav_boost if country(j) is the user's favourite)
          * (revisit_penalty if j was already visited in this trip)

  * The last step additionally multiplies by ``exp(kappa_home * cos(angle(x_j - x_c,
    x_first - x_c)))`` (trips drift back toward where they started), and mixes in a
    return-to-start component: ``P = return_prob * delta(first city) + (1 - return_prob) *
    walk``. The oracle files hold exactly this last-step distribution (top 50), and the
    concealed / last city is sampled from it, so ``ceiling_expected`` is honest.
  * Popularity compounds along a walk, so ``W`` is *fitted*: the walk is run on ``n_fit_trips``
    trips, the expected visits of each city accumulated exactly from the step probabilities
    (Rao-Blackwellised, so the tail is not noise), and ``W`` scaled by
    ``(target / observed) ** fit_damping`` for ``fit_rounds`` rounds. The observed share is a
    blend (``fit_final_weight``) of the last rows' shares and all rows' shares: the calibrated
    statistics are about the final city, and the walk's head is otherwise flatter at the end.
  * The same rounds fit ``cross_scale`` (``fit_cross``): the walk also returns the expected share
    of trips that leave their first city's country and its derivative with respect to
    ``log(cross_scale)`` (both Rao-Blackwellised), and each round takes a Newton step towards
    ``1 - ONE_COUNTRY_SHARE``. With a fixed scale the share ranged from 57 % to 71 % over seeds
    (full); fitted, it lands at 71.6-72.2 % (seeds 0-7, 42, 123).

Calibration notes
  * How predictable the next city is depends on how many cities a country holds relative to
    the candidate lists, so presets carry knob overrides (:attr:`Preset.overrides`): small worlds
    use shorter lists. With them, the previous-city baseline and the oracle ceiling land near
    the real figures at every preset; the "last two cities" gain needs enough pair counts (on
    small and medium it lands between +0.007 and +0.02 depending on the seed, under the +0.02
    target; full passes).
  * The full preset is checked on several seeds, not one (``benchmarks/calibration_seeds.py``:
    every row passes for seeds 0-4 and 42). The previous-city baseline still moves by about
    ±0.008 with the seed (many small draws: the map, which country gets which city, city
    positions, market tastes); ``pair_noise_sd`` = 0.5 centres it on the real 0.436.
  * Knobs that matter most: ``k_near`` / ``k_hub`` (order-1 predictability), ``kappa_mean`` and
    ``momentum_last`` (direction: what the oracle and order-2 models know beyond the previous
    city), ``market_city_sd`` (market-specific hubs), ``tour_share`` / ``cross_tour`` /
    ``cross_home`` (countries per trip), ``return_prob`` / ``kappa_home`` (round trips).

Everything is drawn from ``numpy.random.default_rng`` streams derived from the seed (the world
from one child stream per part, :data:`WORLD_PARTS`), and files are written in a fixed order, so
the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["PRESETS", "Preset", "Knobs", "generate", "MARKETS"]

# --------------------------------------------------------------------------------------------
# Fixed targets (full-scale shapes; the calibration table in calibrate.py checks them)
# --------------------------------------------------------------------------------------------
MARKETS = ("Gondal", "Elbonia", "The Devilfire Empire", "Tcherkistan", "Bartovia")
MARKET_SHARES = np.array([0.459, 0.245, 0.202, 0.069, 0.025])
# Popularity rank of each market's home country among hotel countries (clamped to n_countries).
MARKET_HOME_RANK = (1, 4, 7, 13, 19)
DEVICES = ("desktop", "mobile", "tablet")
DEVICE_SHARES = np.array([0.646, 0.284, 0.070])
# Trip length (rows): P(4..8) explicitly, the rest (9+) a geometric body plus a heavier tail.
LENGTH_HEAD = {4: 0.451, 5: 0.229, 6: 0.126, 7: 0.072, 8: 0.045}
LENGTH_MEAN = 5.36
LENGTH_MAX = 48
# Start-month weights (Jan..Dec); rows of a trip spill a little into the next month.
MONTH_WEIGHTS = np.array([4.6, 4.5, 5.5, 6.5, 7.4, 8.8, 15.3, 20.3, 11.2, 6.9, 4.4, 4.6])
# Cumulative share of all reservations held by the top-r cities: (rank, share) anchors,
# interpolated log-log; the last anchor is always (n_cities, 1.0).
CITY_CURVE = ((1, 0.018), (4, 0.061), (100, 0.39), (1000, 0.73), (5000, 0.924))
# The same for hotel countries.
COUNTRY_CURVE = ((1, 0.107), (10, 0.602), (20, 0.775), (50, 0.953))
TOP5_AFFILIATE_SHARES = np.array([0.20, 0.15, 0.10, 0.07, 0.05])  # 57 % of trips
# Share of trips whose cities all lie in one hotel country (the cross-country scale is fitted to it).
ONE_COUNTRY_SHARE = 0.722


@dataclass(frozen=True)
class Preset:
    """Sizes of one preset. Pools (cities, affiliates) scale with the data."""

    name: str
    n_train_trips: int
    n_test_trips: int
    n_cities: int  # city pool; the distinct cities actually seen are a little fewer
    n_countries: int
    n_affiliates: int  # affiliate pool
    n_fit_trips: int  # trips simulated per popularity-fitting round
    # Knob overrides for this size: countries of a small world hold few cities, so candidate
    # lists shrink with them (else every list covers the whole country and the walk is flatter
    # and less predictable than the real one; see the calibration notes in the docstring).
    overrides: tuple[tuple[str, float], ...] = ()

    def knobs(self) -> "Knobs":
        """The default knobs with this preset's overrides."""
        return replace(Knobs(), **dict(self.overrides))


# Tuned on small (seed 42): prev-city 0.447, ceiling 0.728; last-two gain ~0.017 (pair counts are
# sparse at this size, so the order-2 gain is data-limited).
_SMALL_WORLD = (("k_near", 14), ("k_hub", 6), ("k_cross_countries", 2), ("cross_tour", 30.0),
                ("cross_home", 0.15), ("tour_share", 0.35), ("momentum_last", 4.0),
                ("kappa_mean", 3.5), ("pair_noise_sd", 0.0), ("market_city_sd", 0.6))
PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", 300, 100, 400, 24, 40, 2_000, _SMALL_WORLD),
    "small": Preset("small", 10_884, 3_533, 2_300, 60, 330, 15_000, _SMALL_WORLD),
    "medium": Preset("medium", 54_422, 17_666, 11_000, 195, 1_100, 40_000,
                     (("k_near", 24), ("k_hub", 12), ("momentum_last", 3.5))),
    "full": Preset("full", 217_686, 70_662, 44_400, 195, 3_300, 60_000),
}


@dataclass(frozen=True)
class Knobs:
    """Every knob of the generative story (see the module docstring for where each acts)."""

    n_regions: int = 12  # groups of neighbouring countries
    k_near: int = 44  # nearest same-country candidates per city
    k_hub: int = 16  # most popular same-country candidates per city
    k_cross_countries: int = 3  # nearest other countries offering candidates
    k_cross_hubs: int = 2  # most popular cities taken from each of those countries
    k_cross_gate: int = 3  # ... plus its "gateways" (a sample of its cities) nearest the city
    n_gateways: int = 40  # gateway cities per country (drawn by sqrt of popularity)
    dist_power: float = 1.5  # static affinity decays as (1 + d / d_ref) ** -dist_power
    pair_noise_sd: float = 0.5  # lognormal sd of (symmetric) city-pair affinity: predictability
    tour_share: float = 0.4  # trips that are multi-country tours
    cross_tour: float = 80.0  # affinity multiplier for another country's candidates on a tour
    cross_home: float = 0.3  # ... and on the other trips
    kappa_mean: float = 2.5  # mean direction-momentum strength (Gamma(2) across trips)
    momentum_last: float = 2.5  # weight of the last step's direction next to the trip's own
    market_city_sd: float = 0.9  # lognormal sd of a market's taste for individual cities
    revisit_penalty: float = 0.04  # weight multiplier for an already visited city
    return_prob: float = 0.06  # last step: probability of returning to the first city
    kappa_home: float = 1.0  # last step: pull toward the first city's direction
    seasonal_share: float = 0.3  # share of countries with seasonal popularity
    season_amp: tuple[float, float] = (0.4, 1.1)  # amplitude range A of seasonal countries
    market_affinity_sd: float = 0.6  # lognormal sd of market x country affinity
    market_region_boost: float = 2.0  # a market's taste for its own region
    market_home_boost: float = 4.0  # a market's taste for its own country
    user_fav_start: float = 0.35  # a trip starts in the user's favourite country
    user_fav_boost: float = 1.0  # walk weight bonus (+100 %) for the favourite country
    multi_user_trips_p: float = 0.55  # extra trips of a multi-trip user ~ Geometric(p) - 1
    overlap_share: float = 0.14  # test users who also have train trips
    nights_alpha: float = 0.35  # Dirichlet concentration splitting extra nights over stays
    extra_nights_base: float = 3.1  # mean extra nights (beyond one per stay) of a 4-stay trip
    extra_nights_per_stay: float = 0.45  # ... plus this per additional stay
    long_stay_share: float = 0.03  # trips with a long-stay tail (up to 30 nights a stay)
    long_stay_mean: float = 9.0  # mean extra nights of that tail
    gap_share: float = 0.04  # trips with one gap between two stays
    device_stick: float = 0.8  # a trip uses the user's device (else a fresh draw)
    device_switch: float = 0.04  # a row switches device within a trip
    affiliate_stick: float = 0.7  # a trip uses the user's affiliate
    affiliate_switch: float = 0.03  # a row switches affiliate within a trip
    fit_rounds: int = 6  # popularity-fitting rounds
    fit_damping: float = 0.85  # exponent of the (target / observed) correction
    fit_final_weight: float = 0.8  # fit the last rows' shares (vs all rows') to the target
    fit_cross: bool = True  # fit a scale of cross_tour / cross_home to ONE_COUNTRY_SHARE
    oracle_top: int = 50  # cities kept per trip in the oracle files
    years: tuple[int, ...] = field(default=(2016, 2017))


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _curve_shares(n: int, anchors: tuple[tuple[int, float], ...]) -> np.ndarray:
    """Shares of ranks 1..n from cumulative (rank, share) anchors, interpolated in log-log."""
    pts = [(r, s) for r, s in anchors if r < n] + [(n, 1.0)]
    r = np.array([p[0] for p in pts], dtype=float)
    s = np.array([p[1] for p in pts], dtype=float)
    ranks = np.arange(1, n + 1, dtype=float)
    cum = np.exp(np.interp(np.log(ranks), np.log(r), np.log(s)))
    cum[ranks < r[0]] = s[0] * ranks[ranks < r[0]] / r[0]
    shares = np.diff(np.concatenate([[0.0], cum]))
    shares = np.sort(np.maximum(shares, 1e-12))[::-1]  # non-increasing
    return shares / shares.sum()


def _country_names(n: int) -> list[str]:
    """Deterministic fictional country names (no commas); the five market names come first."""
    rng = np.random.default_rng(20210301)
    onsets = ["B", "D", "G", "K", "L", "M", "N", "P", "R", "S", "T", "V", "Z", "Br", "Dr",
              "Gr", "Kr", "Tr", "St", "Th", "Sh", "Qu", "Fl", "Al", "El", "Or", "Ul", "Ar"]
    vowels = ["a", "e", "i", "o", "u", "ia", "ea", "ou", "ai"]
    codas = ["", "n", "r", "l", "s", "th", "nd", "rk", "st", "v"]
    endings = ["ia", "land", "stan", "ovia", "ania", "ara", "ica", "mark", "burg", "onia", "esh"]
    names: list[str] = []
    seen = set(MARKETS)
    while len(names) < n:
        k = int(rng.integers(1, 3))
        stem = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(k))
        name = (stem + str(rng.choice(endings))).capitalize()
        if rng.random() < 0.12:
            name = f"{name} {rng.choice(['Islands', 'Republic', 'Coast', 'Union'])}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _pair_normal(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A standard normal per *unordered* pair (a, b), from a splitmix64 hash (symmetric)."""
    lo = np.minimum(a, b).astype(np.uint64)
    hi = np.maximum(a, b).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = lo * np.uint64(0x9E3779B97F4A7C15) ^ (hi + np.uint64(seed))
        out = []
        for _ in range(2):
            x = x + np.uint64(0x9E3779B97F4A7C15)
            z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            out.append(((z >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53)
    u1, u2 = out
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _sample_rows(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the first cumulative weight above ``u * total`` in each row of ``cum``."""
    idx = (cum < (u * cum[:, -1])[:, None]).sum(axis=1)
    return np.minimum(idx, cum.shape[1] - 1)


# --------------------------------------------------------------------------------------------
# World: countries, cities, candidate lists, markets, affiliates
# --------------------------------------------------------------------------------------------
def _region_centres(n: int, rng: np.random.Generator) -> np.ndarray:
    """Centres of ``n`` regions on the 100 x 100 map: one per cell of a jittered grid.

    (Uniform draws let two regions, and so their big countries, land on top of each other or
    leave the map half empty, which moved how often trips cross borders from seed to seed.)
    """
    gx = int(np.ceil(np.sqrt(n)))
    gy = int(np.ceil(n / gx))
    cells = np.sort(rng.permutation(gx * gy)[:n])
    ix, iy = cells % gx, cells // gx
    jitter = rng.uniform(-0.25, 0.25, size=(n, 2))
    x = 10 + (ix + 0.5 + jitter[:, 0]) * 80 / gx
    y = 10 + (iy + 0.5 + jitter[:, 1]) * 80 / gy
    return np.c_[x, y]


def _country_offsets(region: np.ndarray, n_regions: int, rng: np.random.Generator,
                     sd: float = 6.0) -> np.ndarray:
    """Offsets of the countries from their region's centre: stratified, not iid.

    Country ``c`` is the ``c // n_regions``-th of its region (regions are dealt in popularity
    rounds, :func:`_deal_regions`). The k-th of a region's m countries gets a distance drawn
    inside the k-th of m equal-probability strata of the distance of an isotropic 2-D normal
    (sd ``sd``), and the angle ``phi + k * golden angle`` (``phi`` random per region): the big
    countries sit near their region's centre and the others spread evenly around them, instead
    of iid normal offsets that stacked some big countries on each other and isolated others.
    """
    nco = len(region)
    k = np.arange(nco) // n_regions  # one country of each round per region
    m = np.bincount(region, minlength=n_regions)[region]
    q = (k + rng.random(nco)) / m
    dist = sd * np.sqrt(-2.0 * np.log1p(-np.minimum(q, 1 - 1e-9)))
    phi = rng.uniform(0, 2 * np.pi, n_regions)[region]
    ang = phi + k * np.pi * (3.0 - np.sqrt(5.0))
    return np.c_[dist * np.cos(ang), dist * np.sin(ang)]


def _deal_regions(nco: int, n_regions: int, home: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Region of each country (index = popularity rank): dealt in rounds of ``n_regions``.

    Each round of ``n_regions`` consecutive ranks gets a random permutation of the regions, so
    every region holds one country of each popularity tier and the big countries are spread
    over the map (iid draws put several of the top ten in one region in some seeds and none in
    others). The markets' home countries then get distinct regions (where there are five) by
    swapping within their round, which keeps the deal balanced.
    """
    region = np.concatenate([rng.permutation(n_regions)
                             for _ in range(-(-nco // n_regions))])[:nco]
    homes = set(home.tolist())
    used: set[int] = set()
    for h in home.tolist():
        if region[h] in used and len(used) < n_regions:
            lo = (h // n_regions) * n_regions
            free = [c for c in range(lo, min(lo + n_regions, nco))
                    if c not in homes and region[c] not in used]
            if free:
                region[h], region[free[0]] = region[free[0]], region[h]
        used.add(int(region[h]))
    return region


@dataclass
class World:
    country_names: list[str]
    country_xy: np.ndarray  # (n_countries, 2)
    season: np.ndarray  # (n_countries, 12) popularity factor by check-in month (index 0 = Jan)
    city_country: np.ndarray  # (n_cities,) int
    city_xy: np.ndarray  # (n_cities, 2)
    target: np.ndarray  # (n_cities,) target share of reservations
    city_ids: np.ndarray  # (n_cities,) public city_id
    cand: np.ndarray  # (n_cities, K) candidate next cities (padding: the city itself)
    G: np.ndarray  # (n_cities, K) static affinity (0 on padding)
    ux: np.ndarray  # (n_cities, K) unit direction from the city to the candidate
    uy: np.ndarray
    cand_country: np.ndarray  # (n_cities, K)
    maff: np.ndarray  # (5, n_countries) market x country affinity
    mcity: np.ndarray  # (5, n_cities) market x city taste
    market_home: np.ndarray  # (5,) home country of each market
    affiliate_ids: np.ndarray  # (n_affiliates,) public affiliate_id
    aff_top_w: np.ndarray  # (5 markets, 5) weights over the five big affiliates
    aff_tail_market: np.ndarray  # (n_tail,) market of each tail affiliate
    aff_tail_w: np.ndarray  # (n_tail,) Zipf weight of each tail affiliate
    device_p: np.ndarray  # (5, 3) device mix per market


WORLD_PARTS = ("map", "season", "deal", "position", "ids", "links", "maff", "mcity", "affiliates")


def _world_streams(rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """One independent child stream per part of the world (a change to how one part is drawn
    leaves the others as they were)."""
    return dict(zip(WORLD_PARTS, rng.spawn(len(WORLD_PARTS))))


def _build_world(p: Preset, kn: Knobs, rng: np.random.Generator) -> World:
    """Countries, cities, candidate lists, market tastes, affiliates and devices of a preset."""
    nco, nci = p.n_countries, p.n_cities
    rs = _world_streams(rng)
    # --- countries: shares, names, regions, map positions, seasons
    ctry_share = _curve_shares(nco, COUNTRY_CURVE)  # by popularity rank
    names = _country_names(nco)
    home = np.array([min(r, nco - 1) for r in MARKET_HOME_RANK])
    if len(set(home.tolist())) < 5:
        home = np.arange(5)
    others = iter(names)
    final_names = []
    for c in range(nco):
        if c in home:
            final_names.append(MARKETS[int(np.where(home == c)[0][0])])
        else:
            final_names.append(next(others))
    n_regions = min(kn.n_regions, max(2, nco // 4))
    region_xy = _region_centres(n_regions, rs["map"])
    ctry_region = _deal_regions(nco, n_regions, home, rs["map"])
    ctry_xy = region_xy[ctry_region] + _country_offsets(ctry_region, n_regions, rs["map"])
    season = np.ones((nco, 12))
    r_season = rs["season"]
    seasonal = r_season.random(nco) < kn.seasonal_share
    months = np.arange(12)
    for c in np.where(seasonal)[0]:
        peak = (6.5 if r_season.random() < 0.7 else 0.5) + r_season.normal(0, 0.7)  # summer or winter
        amp = r_season.uniform(*kn.season_amp)
        season[c] = np.exp(amp * np.cos(2 * np.pi * (months - peak) / 12))

    # --- cities: target shares dealt to countries (largest deficit first, a little randomness)
    target = _curve_shares(nci, CITY_CURVE)
    deficit = ctry_share.copy()
    city_country = np.empty(nci, dtype=np.int64)
    # every country gets at least one city: the last nco cities (smallest) go round-robin
    jitter = rs["deal"].random(nci)
    for i in range(nci - nco):
        # pick among the 3 largest deficits, weighted by deficit (keeps marginals, adds variety)
        top = np.argpartition(-deficit, 2)[:3]
        w = np.maximum(deficit[top], 1e-15)
        c = top[min(int(np.searchsorted(np.cumsum(w) / w.sum(), jitter[i])), 2)]
        city_country[i] = c
        deficit[c] -= target[i]
    city_country[nci - nco:] = rs["deal"].permutation(nco)
    n_per = np.bincount(city_country, minlength=nco)
    radius = 0.9 * np.sqrt(n_per / 25.0) + 0.5
    ang = rs["position"].uniform(0, 2 * np.pi, nci)
    rad = radius[city_country] * np.sqrt(rs["position"].random(nci))
    city_xy = ctry_xy[city_country] + np.c_[rad * np.cos(ang), rad * np.sin(ang)]
    city_ids = np.sort(rs["ids"].choice(np.arange(1, int(nci * 1.6) + 10), nci, replace=False))
    city_ids = rs["ids"].permutation(city_ids)

    # --- candidate lists
    kn_near, kh = kn.k_near, kn.k_hub
    kx = kn.k_cross_countries * (kn.k_cross_hubs + kn.k_cross_gate)
    K = kn_near + kh + kx
    cand = np.repeat(np.arange(nci)[:, None], K, axis=1)
    valid = np.zeros((nci, K), dtype=bool)
    d_ref = np.ones(nci)
    hubs_of = {}
    for c in range(nco):
        members = np.where(city_country == c)[0]
        hubs_of[c] = members[np.argsort(-target[members], kind="stable")][: max(kh, kn.k_cross_hubs) + 1]
    for c in range(nco):
        members = np.where(city_country == c)[0]
        m = len(members)
        if m <= 1:
            continue
        k = min(kn_near, m - 1)
        xy = city_xy[members]
        for s in range(0, m, 2048):
            blk = xy[s:s + 2048]
            d = ((blk[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
            d[np.arange(len(blk)), np.arange(s, s + len(blk))] = np.inf
            nn = np.argpartition(d, k - 1, axis=1)[:, :k]
            dn = np.take_along_axis(d, nn, axis=1)
            o = np.argsort(dn, axis=1)
            nn = np.take_along_axis(nn, o, axis=1)
            dn = np.sqrt(np.take_along_axis(dn, o, axis=1))
            rows = members[s:s + len(blk)]
            cand[rows, :k] = members[nn]
            valid[rows, :k] = True
            d_ref[rows] = np.maximum(dn[:, min(7, k - 1)], 1e-3)
        # hubs of the same country (skip the city itself and cities already among its neighbours)
        # the country's kh most popular cities (a hub loses its own entry when de-duplicating)
        hub_mat = np.broadcast_to(hubs_of[c][:kh], (m, min(kh, len(hubs_of[c]))))
        cand[members, kn_near:kn_near + hub_mat.shape[1]] = hub_mat
        valid[members, kn_near:kn_near + hub_mat.shape[1]] = True
    # cross-country hubs of the nearest other countries (by distance from the city)
    dc = np.empty((nci, nco), dtype=np.float32)
    for s in range(0, nci, 8192):
        dc[s:s + 8192] = ((city_xy[s:s + 8192, None, :] - ctry_xy[None, :, :]) ** 2).sum(-1)
    dc[np.arange(nci), city_country] = np.inf
    kcc = min(kn.k_cross_countries, nco - 1)
    near_c = np.argpartition(dc, kcc - 1, axis=1)[:, :kcc]  # the kcc nearest other countries
    # gateways: per country a sample of its cities (padded with -1), by sqrt of popularity
    ng = kn.n_gateways
    gates = np.full((nco, ng), -1, dtype=np.int64)
    for c in range(nco):
        members = np.where(city_country == c)[0]
        pw = np.sqrt(target[members])
        pick = rs["links"].choice(members, size=min(ng, len(members)), replace=False,
                                  p=pw / pw.sum())
        gates[c, :len(pick)] = pick
    col = kn_near + kh
    for a in range(kcc):
        nc_a = near_c[:, a]
        for b in range(kn.k_cross_hubs):
            hub_b = np.array([hubs_of[c][b] if len(hubs_of[c]) > b else -1 for c in range(nco)])
            hcity = hub_b[nc_a]
            ok = hcity >= 0
            cand[ok, col] = hcity[ok]
            valid[ok, col] = True
            col += 1
        # the k_cross_gate gateways of that country nearest to the city
        g = gates[nc_a]  # (nci, ng)
        dg = ((city_xy[np.maximum(g, 0)] - city_xy[:, None, :]) ** 2).sum(-1)
        dg[g < 0] = np.inf
        kg = min(kn.k_cross_gate, ng)
        nearest = np.argsort(dg, axis=1, kind="stable")[:, :kg]
        gsel = np.take_along_axis(g, nearest, axis=1)
        ok = np.take_along_axis(dg, nearest, axis=1) < np.inf
        cand[:, col:col + kg] = np.where(ok, gsel, cand[:, col:col + kg])
        valid[:, col:col + kg] = ok
        col += kg
    # de-duplicate: a hub may also be a near neighbour; the city itself is never a candidate
    rows_idx = np.arange(nci)[:, None]
    valid &= cand != rows_idx
    for k in range(1, K):
        dup = (cand[:, :k] == cand[:, k:k + 1]).any(axis=1)
        valid[:, k] &= ~dup
    cand[~valid] = np.broadcast_to(rows_idx, cand.shape)[~valid]
    dxy = city_xy[cand] - city_xy[:, None, :]
    dist = np.sqrt((dxy ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ux = np.where(dist > 0, dxy[..., 0] / dist, 0.0)
        uy = np.where(dist > 0, dxy[..., 1] / dist, 0.0)
    cand_country = city_country[cand]
    G = (1.0 + dist / d_ref[:, None]) ** (-kn.dist_power)
    # symmetric pair noise: c -> j and j -> c share it, so a strong link is strong both ways (and
    # the walk's revisit penalty makes "not straight back" second-order structure)
    G *= np.exp(kn.pair_noise_sd * _pair_normal(np.arange(nci)[:, None], cand,
                                                int(rs["links"].integers(1, 2**62))))
    G[~valid] = 0.0

    # --- markets: affinity to countries
    maff = np.exp(rs["maff"].normal(0, kn.market_affinity_sd, size=(5, nco)))
    mcity = np.exp(rs["mcity"].normal(0, kn.market_city_sd, size=(5, nci)))
    for m in range(5):
        maff[m, ctry_region == ctry_region[home[m]]] *= kn.market_region_boost
        maff[m, home[m]] *= kn.market_home_boost

    # --- affiliates and devices
    na = max(p.n_affiliates, 10)
    r_aff = rs["affiliates"]
    affiliate_ids = np.sort(r_aff.choice(np.arange(1, na * 3 + 100), na, replace=False))
    affiliate_ids = r_aff.permutation(affiliate_ids)
    aff_top_w = TOP5_AFFILIATE_SHARES[None, :] * np.exp(r_aff.normal(0, 0.3, size=(5, 5)))
    aff_top_w = aff_top_w / aff_top_w.sum(1, keepdims=True) * TOP5_AFFILIATE_SHARES.sum()
    n_tail = na - 5
    aff_tail_market = r_aff.choice(5, size=n_tail, p=0.5 * MARKET_SHARES + 0.1)
    aff_tail_w = 1.0 / (1.0 + np.arange(n_tail)) ** 0.9
    dev = DEVICE_SHARES[None, :] * np.exp(r_aff.normal(0, 0.12, size=(5, 3)))
    dev /= dev.sum(1, keepdims=True)
    # re-centre so that the market-weighted mix is exactly the target mix
    dev *= DEVICE_SHARES / (MARKET_SHARES @ dev)
    dev /= dev.sum(1, keepdims=True)

    return World(
        country_names=final_names, country_xy=ctry_xy, season=season, city_country=city_country,
        city_xy=city_xy, target=target, city_ids=city_ids, cand=cand.astype(np.int32),
        G=G, ux=ux.astype(np.float32), uy=uy.astype(np.float32),
        cand_country=cand_country.astype(np.int32), maff=maff, mcity=mcity, market_home=home,
        affiliate_ids=affiliate_ids, aff_top_w=aff_top_w, aff_tail_market=aff_tail_market,
        aff_tail_w=aff_tail_w, device_p=dev,
    )


# --------------------------------------------------------------------------------------------
# Users and trips (everything except the cities)
# --------------------------------------------------------------------------------------------
@dataclass
class Trips:
    user: np.ndarray  # user index
    k: np.ndarray  # trip number of the user (1-based, by start date)
    is_test: np.ndarray
    market: np.ndarray
    fav: np.ndarray  # user's favourite country
    length: np.ndarray
    kappa: np.ndarray
    cross: np.ndarray  # multiplier for candidates in another country (tour or not)
    dirx: np.ndarray
    diry: np.ndarray
    row_off: np.ndarray  # (n_trips + 1,) row offsets
    checkin: np.ndarray  # per row, days since 1970-01-01
    checkout: np.ndarray
    month: np.ndarray  # per row, check-in month 0..11
    device: np.ndarray  # per row
    affiliate: np.ndarray  # per row (index into World.affiliate_ids)

    def subset(self, idx: np.ndarray) -> "Trips":
        """The trips ``idx`` (rows re-packed)."""
        rows = _ragged_rows(self.row_off, idx)
        off = np.zeros(len(idx) + 1, dtype=np.int64)
        off[1:] = np.cumsum(self.length[idx])
        per_trip = {f: getattr(self, f)[idx] for f in
                    ("user", "k", "is_test", "market", "fav", "length", "kappa", "cross", "dirx",
                              "diry")}
        per_row = {f: getattr(self, f)[rows] for f in
                   ("checkin", "checkout", "month", "device", "affiliate")}
        return Trips(row_off=off, **per_trip, **per_row)


def _ragged_rows(off: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Row indices of trips ``idx`` given row offsets ``off``, concatenated in order."""
    lens = off[idx + 1] - off[idx]
    starts = np.repeat(off[idx], lens)
    within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    return starts + within


def _trip_lengths(n: int, rng: np.random.Generator) -> np.ndarray:
    head = np.array(list(LENGTH_HEAD.values()))
    tail_mass = 1.0 - head.sum()
    head_mean = float(np.dot(list(LENGTH_HEAD.keys()), head))
    tail_mean = (LENGTH_MEAN - head_mean) / tail_mass - 9.0  # mean extra length above 9
    # tail: 9 + X, X ~ mixture of Geometric(p1) - 1 (share 1 - h) and Geometric(0.12) - 1 (share h)
    h, heavy_mean = 0.06, 1 / 0.12 - 1
    light_mean = (tail_mean - h * heavy_mean) / (1 - h)
    p1 = 1.0 / (1.0 + light_mean)
    u = rng.random(n)
    cum = np.cumsum(head)
    L = 4 + np.searchsorted(cum, u, side="right")
    tail = L >= 9
    nt = int(tail.sum())
    heavy = rng.random(nt) < h
    x = np.where(heavy, rng.geometric(0.12, nt) - 1, rng.geometric(p1, nt) - 1)
    L[tail] = np.minimum(9 + x, LENGTH_MAX)
    return L.astype(np.int64)


def _build_trips(p: Preset, kn: Knobs, world: World, rng: np.random.Generator) -> Trips:
    n_test, n_train = p.n_test_trips, p.n_train_trips
    # --- users: overlap users (1 test trip + >= 1 train trips), train-only multi-trip users,
    # single-trip users in train and in test
    n_overlap = int(round(kn.overlap_share * n_test))
    n_multi_train = n_overlap
    c_over = 1 + rng.geometric(kn.multi_user_trips_p, n_overlap)  # >= 2 trips
    c_multi = 1 + rng.geometric(kn.multi_user_trips_p, n_multi_train)
    n_single_train = n_train - int((c_over - 1).sum()) - int(c_multi.sum())
    if n_single_train < 0:
        raise ValueError("preset too small for the user structure")
    n_single_test = n_test - n_overlap
    counts = np.concatenate([c_over, c_multi, np.ones(n_single_train + n_single_test, np.int64)])
    n_users = len(counts)
    user_of_trip = np.repeat(np.arange(n_users), counts)
    n_trips = len(user_of_trip)
    is_test = np.zeros(n_trips, dtype=bool)
    first_trip = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # overlap users: a random one of their trips is the test trip
    is_test[first_trip[:n_overlap] + (rng.random(n_overlap) * c_over).astype(np.int64)] = True
    single_start = n_overlap + n_multi_train
    single_test_users = single_start + rng.permutation(n_single_train + n_single_test)[:n_single_test]
    is_test[first_trip[single_test_users]] = True

    # --- user attributes
    u_market = rng.choice(5, size=n_users, p=MARKET_SHARES)
    # favourite country ~ country popularity x market affinity
    ctry_pop = np.bincount(world.city_country, weights=world.target, minlength=len(world.country_names))
    fav_p = ctry_pop[None, :] * world.maff
    fav_cum = np.cumsum(fav_p / fav_p.sum(1, keepdims=True), axis=1)
    u_fav = np.minimum(
        (fav_cum[u_market] < rng.random(n_users)[:, None]).sum(1), fav_cum.shape[1] - 1)
    u_device = _sample_rows(np.cumsum(world.device_p[u_market], axis=1), rng.random(n_users))
    u_aff = _draw_affiliates(world, u_market, rng)

    # --- trip attributes
    market = u_market[user_of_trip]
    L = _trip_lengths(n_trips, rng)
    kappa = rng.gamma(2.0, kn.kappa_mean / 2.0, n_trips)
    cross = np.where(rng.random(n_trips) < kn.tour_share, kn.cross_tour, kn.cross_home)
    theta = rng.uniform(0, 2 * np.pi, n_trips)
    month0 = rng.choice(12, size=n_trips, p=MONTH_WEIGHTS / MONTH_WEIGHTS.sum())
    year = np.asarray(kn.years)[rng.integers(0, len(kn.years), n_trips)]
    mstart = (np.array([f"{y}-{m + 1:02d}-01" for y, m in
                        np.unique(np.c_[year, month0], axis=0)], dtype="datetime64[D]"))
    key_y, key_m = np.unique(np.c_[year, month0], axis=0).T
    key = np.searchsorted(key_y * 12 + key_m, year * 12 + month0)
    first_day = mstart[key].astype(np.int64)
    mlen = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[month0]
    start = first_day + (rng.random(n_trips) * mlen).astype(np.int64)

    # k = order of the user's trips by start date (ties: generation order)
    o = np.lexsort((np.arange(n_trips), start, user_of_trip))
    k = np.empty(n_trips, dtype=np.int64)
    rank_in_user = np.arange(n_trips) - np.repeat(first_trip, counts)
    k[o] = rank_in_user + 1

    # --- nights: total = L + extra, split with Dirichlet weights; one gap in a few trips
    lam = kn.extra_nights_base + kn.extra_nights_per_stay * (L - 4)
    extra = rng.poisson(lam)
    long = rng.random(n_trips) < kn.long_stay_share
    extra[long] += rng.geometric(1.0 / kn.long_stay_mean, int(long.sum()))
    off = np.zeros(n_trips + 1, dtype=np.int64)
    off[1:] = np.cumsum(L)
    n_rows = int(off[-1])
    trip_of_row = np.repeat(np.arange(n_trips), L)
    g = rng.gamma(kn.nights_alpha, 1.0, n_rows) + 1e-12
    gsum = np.bincount(trip_of_row, weights=g)
    gcum = np.cumsum(g / gsum[trip_of_row])  # trip i occupies (i, i + 1]
    gcum = gcum - 1e-9 * (gcum > 0)
    trip_of_night = np.repeat(np.arange(n_trips), extra)
    row_of_night = np.searchsorted(gcum, trip_of_night + rng.random(len(trip_of_night)))
    row_of_night = np.clip(row_of_night, off[trip_of_night], off[trip_of_night + 1] - 1)
    nights = 1 + np.bincount(row_of_night, minlength=n_rows)
    nights = np.minimum(nights, 30)
    gaps = np.zeros(n_rows, dtype=np.int64)
    has_gap = np.where(rng.random(n_trips) < kn.gap_share)[0]
    gap_pos = off[has_gap] + 1 + (rng.random(len(has_gap)) * (L[has_gap] - 1)).astype(np.int64)
    gaps[gap_pos] = rng.geometric(0.45, len(has_gap))
    # checkin = trip start + cumulative (nights + gaps) of previous rows of the trip
    step = nights + gaps
    cs = np.cumsum(step)
    trip_base = np.repeat(cs[off[:-1]] - step[off[:-1]], L)
    checkin = np.repeat(start, L) + (cs - trip_base) - nights  # gaps[r] precedes row r
    checkout = checkin + nights
    month = (checkin.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12)

    # --- devices and affiliates per row
    t_device = np.where(rng.random(n_trips) < kn.device_stick, u_device[user_of_trip],
                        _sample_rows(np.cumsum(world.device_p[market], axis=1), rng.random(n_trips)))
    device = t_device[trip_of_row]
    sw = rng.random(n_rows) < kn.device_switch
    device[sw] = _sample_rows(np.cumsum(world.device_p[market[trip_of_row[sw]]], axis=1),
                              rng.random(int(sw.sum())))
    t_aff = np.where(rng.random(n_trips) < kn.affiliate_stick, u_aff[user_of_trip],
                     _draw_affiliates(world, market, rng))
    affiliate = t_aff[trip_of_row]
    sw = rng.random(n_rows) < kn.affiliate_switch
    affiliate[sw] = _draw_affiliates(world, market[trip_of_row[sw]], rng)

    return Trips(
        user=user_of_trip, k=k, is_test=is_test, market=market, fav=u_fav[user_of_trip],
        length=L, kappa=kappa, cross=cross, dirx=np.cos(theta), diry=np.sin(theta), row_off=off,
        checkin=checkin, checkout=checkout, month=month, device=device, affiliate=affiliate,
    )


def _draw_affiliates(world: World, market: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Affiliate index per entry of ``market``: a big-five affiliate (market mix) or a tail one."""
    n = len(market)
    top_w = world.aff_top_w[market]  # (n, 5), rows sum to 0.57
    u = rng.random(n)
    cum = np.cumsum(top_w, axis=1)
    out = (cum < u[:, None]).sum(1)  # 5 = "tail"
    tail = out == 5
    if tail.any():
        # tail affiliate of the trip's market (90 %) or of any market (10 %)
        own = rng.random(int(tail.sum())) < 0.9
        res = np.empty(int(tail.sum()), dtype=np.int64)
        tm = market[tail]
        ur = rng.random(int(tail.sum()))
        w_all = np.cumsum(world.aff_tail_w)
        res[~own] = np.searchsorted(w_all, ur[~own] * w_all[-1])
        for m in range(5):
            sel = own & (tm == m)
            members = np.where(world.aff_tail_market == m)[0]
            if not sel.any():
                continue
            if len(members) == 0:
                members = np.arange(len(world.aff_tail_w))
            wc = np.cumsum(world.aff_tail_w[members])
            res[sel] = members[np.minimum(np.searchsorted(wc, ur[sel] * wc[-1]), len(members) - 1)]
        out[tail] = 5 + np.minimum(res, len(world.aff_tail_w) - 1)
    return out


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------
@dataclass
class WalkResult:
    city: np.ndarray  # per row (city index)
    visits: np.ndarray  # expected visits per city over all rows (Rao-Blackwellised)
    final_visits: np.ndarray  # the same over the trips' last rows only
    final_cand: np.ndarray  # (n_trips, K + 1) last-step candidates, trip order
    final_prob: np.ndarray  # (n_trips, K + 1) last-step probabilities (sum 1)
    multi_country: float  # expected number of trips leaving their first country (see _walk)
    multi_slope: float  # its derivative with respect to log(cross_scale) (see _walk)


def _start_cities(world: World, trips: Trips, W: np.ndarray, kn: Knobs,
                  rng: np.random.Generator) -> np.ndarray:
    n = len(trips.length)
    m0 = trips.month[trips.row_off[:-1]]
    out = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    fav_start = rng.random(n) < kn.user_fav_start
    # (a) a city of the user's favourite country, by fitted popularity
    cc = world.city_country
    order = np.argsort(cc, kind="stable")
    wc = np.cumsum(W[order])
    bounds = np.searchsorted(cc[order], np.arange(len(world.country_names) + 1))
    lo = np.where(bounds[:-1] > 0, wc[np.maximum(bounds[:-1] - 1, 0)], 0.0)
    hi = wc[np.maximum(bounds[1:] - 1, 0)]
    f = trips.fav[fav_start]
    pos = np.searchsorted(wc, lo[f] + u[fav_start] * (hi[f] - lo[f]))
    pos = np.clip(pos, bounds[f], bounds[f + 1] - 1)
    out[fav_start] = order[pos]
    # (b) market x month popularity
    for m in range(5):
        for mo in range(12):
            sel = (~fav_start) & (trips.market == m) & (m0 == mo)
            if not sel.any():
                continue
            w = W * world.maff[m, cc] * world.mcity[m] * world.season[cc, mo]
            c = np.cumsum(w)
            out[sel] = np.minimum(np.searchsorted(c, u[sel] * c[-1]), len(W) - 1)
    return out


def _walk(world: World, trips: Trips, W: np.ndarray, kn: Knobs, rng: np.random.Generator,
          keep_final: bool = True, cross_scale: float = 1.0) -> WalkResult:
    """Walk every trip; vectorised over trips (sorted by length), looping over steps.

    ``cross_scale`` multiplies every trip's cross-country factor (fitted, see
    :func:`_fit_popularity`). ``multi_country`` of the result is the expected number of trips that
    leave their first city's country, Rao-Blackwellised: at each step, a trip that has not left
    yet adds its probability of stepping abroad now (a martingale: unbiased, far less noisy than
    counting the sampled trips). ``multi_slope`` is the derivative of that expectation with
    respect to ``log(cross_scale)``: the scale multiplies only the weights of candidates abroad,
    so given that a trip stays, its path does not depend on the scale, and
    ``P(stay) = E[prod_t (1 - a_t)]`` over those paths (``a_t``: the step's chance of going
    abroad), whose derivative is ``-E[1{stayed} * sum_t g_t]`` with
    ``g_t = -d log(1 - a_t) / d log(scale)`` (``= a_t`` on a plain step).
    """
    n = len(trips.length)
    n_cities = len(W)
    K = world.cand.shape[1]
    A = W[world.cand] * world.G  # popularity x static affinity, (n_cities, K)
    order = np.argsort(-trips.length, kind="stable")
    L = trips.length[order]
    ro = trips.row_off[:-1][order]
    # n_active[t] = number of trips longer than t, i.e. taking step t (L sorted descending)
    n_active = [int(np.searchsorted(-L, -t, side="left")) for t in range(int(L.max()) + 2)]
    city = np.empty(len(trips.month), dtype=np.int64)
    visits = np.zeros(n_cities)
    final_visits = np.zeros(n_cities)
    start = _start_cities(world, trips, W, kn, rng)
    city[trips.row_off[:-1]] = start
    np.add.at(visits, start, 1.0)
    mk, fav = trips.market[order], trips.fav[order]
    kap, dx, dy = trips.kappa[order], trips.dirx[order], trips.diry[order]
    crs = trips.cross[order] * cross_scale
    stay = np.ones(n, dtype=bool)  # (trip order) every city so far in the first city's country
    multi = 0.0
    gsum = np.zeros(n)  # (trip order) sum of g_t over the steps taken while staying
    fcountry = world.city_country[start[order]]
    first = start[order]
    fxy = world.city_xy[first]
    final_cand = np.zeros((n, K + 1), dtype=np.int64) if keep_final else None
    final_prob = np.zeros((n, K + 1)) if keep_final else None
    season_flat = world.season.ravel()
    maff_flat = world.maff.ravel()
    mcity_flat = world.mcity.ravel()
    nco = world.maff.shape[1]
    for t in range(1, int(L.max())):
        na = n_active[t]
        if na == 0:
            break
        rows = ro[:na] + t
        prev = city[rows - 1]
        cand = world.cand[prev]
        cc = world.cand_country[prev]
        w = A[prev]
        # momentum direction: the trip's own direction blended with the last step's
        vx, vy = dx[:na], dy[:na]
        if t >= 2:
            lx = world.city_xy[prev, 0] - world.city_xy[city[rows - 2], 0]
            ly = world.city_xy[prev, 1] - world.city_xy[city[rows - 2], 1]
            ln = np.maximum(np.sqrt(lx ** 2 + ly ** 2), 1e-12)
            vx = vx + kn.momentum_last * lx / ln
            vy = vy + kn.momentum_last * ly / ln
        vn = np.maximum(np.sqrt(vx ** 2 + vy ** 2), 1e-12)
        cosd = world.ux[prev] * (vx / vn)[:, None] + world.uy[prev] * (vy / vn)[:, None]
        w = w * np.exp(kap[:na, None] * cosd)
        w *= season_flat[cc * 12 + trips.month[rows][:, None]]
        w *= maff_flat[mk[:na, None] * nco + cc]
        w *= mcity_flat[mk[:na, None] * n_cities + cand]
        abroad = cc != world.city_country[prev][:, None]
        w *= np.where(abroad, crs[:na, None], 1.0)
        w *= np.where(cc == fav[:na, None], 1.0 + kn.user_fav_boost, 1.0)
        for s in range(t):
            w *= np.where(cand == city[ro[:na] + s][:, None], kn.revisit_penalty, 1.0)
        # trips whose last step this is: sorted by length, they are the suffix [n_next, na)
        n_next = n_active[t + 1]
        fin = slice(n_next, na)
        nf = na - n_next
        if nf:
            hx = fxy[fin, 0] - world.city_xy[prev[fin], 0]
            hy = fxy[fin, 1] - world.city_xy[prev[fin], 1]
            hn = np.sqrt(hx ** 2 + hy ** 2)
            hn = np.where(hn > 0, hn, 1.0)
            hcos = world.ux[prev[fin]] * (hx / hn)[:, None] + world.uy[prev[fin]] * (hy / hn)[:, None]
            w[fin] *= np.exp(kn.kappa_home * hcos)
        p = w / w.sum(axis=1, keepdims=True)
        visits += np.bincount(cand[:n_next].ravel(), weights=p[:n_next].ravel(), minlength=n_cities)
        # non-final steps: sample from the walk
        if n_next:
            h = stay[:n_next]
            a = (p[:n_next] * abroad[:n_next]).sum(axis=1) * h
            multi += float(a.sum())
            gsum[:n_next] += a
            idx = _sample_rows(np.cumsum(p[:n_next], axis=1), rng.random(n_next))
            nxt = cand[np.arange(n_next), idx]
            city[rows[:n_next]] = nxt
            stay[:n_next] &= world.city_country[nxt] == fcountry[:n_next]
        if nf:
            # final step: mixture with a return to the first city (not when already there)
            fc, fp = cand[fin], p[fin]
            rho = np.where(first[fin] != prev[fin], kn.return_prob, 0.0)
            fp = fp * (1.0 - rho)[:, None]
            is_first = fc == first[fin][:, None]
            has = is_first.any(axis=1)
            fp = fp + is_first * rho[:, None]
            ext_c = first[fin][:, None]
            ext_p = np.where(has, 0.0, rho)[:, None]
            fc = np.concatenate([fc, ext_c], axis=1)
            fp = np.concatenate([fp, ext_p], axis=1)
            fp[fc == prev[fin][:, None]] = 0.0  # padding entries (the city itself)
            fp /= fp.sum(axis=1, keepdims=True)
            # (a trip that stayed is in its first city's country: the return column is not abroad)
            h = stay[fin]
            a = (fp[:, :K] * abroad[fin]).sum(axis=1) * h
            multi += float(a.sum())
            # a = (1 - rho) q with q the walk's abroad share: g = (1 - rho) q (1 - q) / (1 - a)
            q = a / (1.0 - rho)
            gsum[fin] += a * (1.0 - q) / np.maximum(1.0 - a, 1e-12)
            fv = np.bincount(fc.ravel(), weights=fp.ravel(), minlength=n_cities)
            visits += fv
            final_visits += fv
            idx = _sample_rows(np.cumsum(fp, axis=1), rng.random(nf))
            last = fc[np.arange(nf), idx]
            city[rows[n_next:]] = last
            stay[fin] &= world.city_country[last] == fcountry[fin]
            if keep_final:
                tid = order[n_next:na]
                final_cand[tid] = fc
                final_prob[tid] = fp
    return WalkResult(city=city, visits=visits, final_visits=final_visits, final_cand=final_cand,
                      final_prob=final_prob, multi_country=multi,
                      multi_slope=float(gsum[stay].sum()))


@dataclass
class Fit:
    W: np.ndarray  # fitted city weights (sum 1)
    cross_scale: float  # fitted multiplier of every cross-country factor
    tv: list[float]  # per round: total variation distance of observed vs target city shares
    one_country: list[float]  # per round: the walk's expected share of one-country trips


def _fit_popularity(world: World, trips: Trips, p: Preset, kn: Knobs,
                    rng: np.random.Generator) -> Fit:
    """Fit city weights W (visit shares = target shares) and the cross-country scale.

    Each round walks the fitting trips once and corrects both: ``W`` by the damped ratio of
    target to observed city shares, and ``log(cross_scale)`` by a Newton step on the log of the
    share of trips that leave their first country, towards ``1 - ONE_COUNTRY_SHARE``; the
    walk returns that share and its derivative (:func:`_walk`'s ``multi_country`` and
    ``multi_slope``; the elasticity is well below 1, tours cross anyway). How easily a walk
    crosses a border depends on the drawn map (how close the big countries lie to their
    neighbours): with a fixed multiplier the one-country share ranged from 57 % to 71 % over
    seeds 0-4 and 42 at full scale; the fitted scale makes it the spec's whatever the map.
    """
    idx = np.sort(rng.choice(len(trips.length), size=min(p.n_fit_trips, len(trips.length)),
                             replace=False))
    sub = trips.subset(idx)
    target = world.target
    W = target.copy()
    log_scale = 0.0
    target_multi = 1.0 - ONE_COUNTRY_SHARE
    errors, one = [], []
    for _ in range(kn.fit_rounds):
        res = _walk(world, sub, W, kn, rng, keep_final=False, cross_scale=float(np.exp(log_scale)))
        obs = (kn.fit_final_weight * res.final_visits / res.final_visits.sum()
               + (1 - kn.fit_final_weight) * res.visits / res.visits.sum())
        errors.append(float(0.5 * np.abs(obs - target).sum()))  # total variation distance
        ratio = (target / np.maximum(obs, 0.05 * target)) ** kn.fit_damping
        W = W * np.clip(ratio, 0.2, 5.0)
        W /= W.sum()
        multi = res.multi_country / len(sub.length)
        one.append(1.0 - multi)
        if kn.fit_cross:  # a Newton step on log(multi-country share) against log(scale)
            elasticity = res.multi_slope / max(res.multi_country, 1e-9)
            step = np.log(target_multi / max(multi, 1e-6)) / max(elasticity, 0.05)
            log_scale += float(np.clip(step, -2.0, 2.0))
    return Fit(W=W, cross_scale=float(np.exp(log_scale)), tv=errors, one_country=one)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _oracle_frame(utrip: np.ndarray, cand: np.ndarray, prob: np.ndarray, city_ids: np.ndarray,
                  top: int) -> pl.DataFrame:
    """Long top-``top`` table (utrip_id, city_id, prob, rank), ties broken by city_id."""
    cid = city_ids[cand]
    # sort each row by (-prob, city_id): lexsort works on 1-D, so combine via stable argsorts
    o1 = np.argsort(cid, axis=1, kind="stable")
    p1 = np.take_along_axis(prob, o1, axis=1)
    o2 = np.argsort(-p1, axis=1, kind="stable")
    o = np.take_along_axis(o1, o2, axis=1)[:, :top]
    cid = np.take_along_axis(cid, o, axis=1)
    prob = np.take_along_axis(prob, o, axis=1)
    keep = prob > 0
    rank = np.broadcast_to(np.arange(1, o.shape[1] + 1, dtype=np.int32), o.shape)
    return pl.DataFrame({
        "utrip_id": pl.Series(np.repeat(utrip, keep.sum(1)), dtype=pl.Utf8),
        "city_id": pl.Series(cid[keep], dtype=pl.Int64),
        "prob": pl.Series(prob[keep], dtype=pl.Float64),
        "rank": pl.Series(rank[keep], dtype=pl.Int32),
    })


def generate(preset: str, seed: int, out_dir: Path | str, knobs: Knobs | None = None) -> dict:
    """Generate preset ``preset`` with ``seed`` into ``out_dir``; return the generator.json dict.

    ``knobs`` (for experiments) replaces the preset's knobs entirely.

    Writes train_set.csv, test_set.csv, ground_truth.csv, oracle.parquet, oracle_train.parquet
    and generator.json.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    p = PRESETS[preset]
    kn = knobs or p.knobs()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence([int(seed), 20210301])
    r_world, r_trips, r_fit, r_walk = (np.random.default_rng(s) for s in ss.spawn(4))

    world = _build_world(p, kn, r_world)
    trips = _build_trips(p, kn, world, r_trips)
    fit = _fit_popularity(world, trips, p, kn, r_fit)
    res = _walk(world, trips, fit.W, kn, r_walk, keep_final=True, cross_scale=fit.cross_scale)

    # --- assemble rows; output order: user_id, trip number, check-in
    n_users = int(trips.user.max()) + 1
    user_ids = np.sort(r_trips.choice(np.arange(1, n_users * 5 + 1000), n_users, replace=False))
    user_ids = r_trips.permutation(user_ids)
    uid = user_ids[trips.user]
    utrip = np.array([f"{a}_{b}" for a, b in zip(uid.tolist(), trips.k.tolist())], dtype=object)
    L = trips.length
    trip_of_row = np.repeat(np.arange(len(L)), L)
    last_row = trips.row_off[1:] - 1
    names = np.array(world.country_names, dtype=object)
    ctry = world.city_country[res.city]
    frame = pl.DataFrame({
        "user_id": pl.Series(uid[trip_of_row], dtype=pl.Int64),
        "checkin": pl.Series(trips.checkin.astype(np.int32)).cast(pl.Date),
        "checkout": pl.Series(trips.checkout.astype(np.int32)).cast(pl.Date),
        "city_id": pl.Series(world.city_ids[res.city], dtype=pl.Int64),
        "device_class": pl.Series(np.array(DEVICES, dtype=object)[trips.device], dtype=pl.Utf8),
        "affiliate_id": pl.Series(world.affiliate_ids[trips.affiliate], dtype=pl.Int64),
        "booker_country": pl.Series(np.array(MARKETS, dtype=object)[trips.market[trip_of_row]],
                                    dtype=pl.Utf8),
        "hotel_country": pl.Series(names[ctry], dtype=pl.Utf8),
        "utrip_id": pl.Series(utrip[trip_of_row], dtype=pl.Utf8),
        "_trip": pl.Series(trip_of_row, dtype=pl.Int64),
        "_k": pl.Series(trips.k[trip_of_row], dtype=pl.Int64),
        "_test": pl.Series(trips.is_test[trip_of_row]),
        "_last": pl.Series(np.isin(np.arange(len(trip_of_row)), last_row)),
    }).sort(["user_id", "_k", "checkin"])
    cols = ["user_id", "checkin", "checkout", "city_id", "device_class", "affiliate_id",
            "booker_country", "hotel_country", "utrip_id"]
    train = frame.filter(~pl.col("_test"))
    test = frame.filter(pl.col("_test"))
    truth = test.filter(pl.col("_last")).select(["utrip_id", "city_id", "hotel_country"])
    test_out = test.with_columns(
        pl.when(pl.col("_last")).then(0).otherwise(pl.col("city_id")).alias("city_id"),
        pl.when(pl.col("_last")).then(pl.lit(None, dtype=pl.Utf8)).otherwise(pl.col("hotel_country"))
        .alias("hotel_country"),
    )
    train.select(cols).write_csv(out / "train_set.csv")
    test_out.select(cols).write_csv(out / "test_set.csv")
    truth.write_csv(out / "ground_truth.csv")

    # --- oracle files (trip order = file order of the trips)
    summary: dict = {}
    for name, is_test in (("oracle.parquet", True), ("oracle_train.parquet", False)):
        tids = (train if not is_test else test).filter(pl.col("_last"))["_trip"].to_numpy()
        orc = _oracle_frame(utrip[tids], res.final_cand[tids], res.final_prob[tids],
                            world.city_ids, kn.oracle_top)
        orc.write_parquet(out / name)
        top4 = orc.filter(pl.col("rank") <= 4)
        expected = float(top4["prob"].sum() / len(tids))
        truth_c = world.city_ids[res.city[last_row[tids]]]
        hit = top4.join(pl.DataFrame({"utrip_id": utrip[tids].astype(str), "t": truth_c}),
                        on="utrip_id").filter(pl.col("city_id") == pl.col("t"))
        realized = hit.height / len(tids)
        suffix = "" if is_test else "_train"
        summary[f"ceiling_expected{suffix}"] = round(expected, 6)
        summary[f"ceiling_realized{suffix}"] = round(realized, 6)

    info = {
        "preset": preset,
        "seed": int(seed),
        "counts": {
            "train_rows": train.height, "train_trips": int((~trips.is_test).sum()),
            "test_rows": test.height, "test_trips": int(trips.is_test.sum()),
            "users": n_users, "cities": p.n_cities, "countries": p.n_countries,
            "affiliates": len(world.affiliate_ids),
        },
        **summary,
        "fit_tv_distance": [round(e, 4) for e in fit.tv],
        "fit_one_country": [round(e, 4) for e in fit.one_country],
        "cross_scale": round(fit.cross_scale, 4),
        "one_country_expected": round(1.0 - res.multi_country / len(trips.length), 4),
        "knobs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(kn).items()},
    }
    (out / "generator.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
