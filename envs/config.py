"""``EnvConfig``: everything that decides how the trading env fills, charges and rewards.

One frozen pydantic model, validated once (bad keys and values raise
:class:`~coinrl.pipeline.errors.ConfigError` with the field path). Derived values are properties,
never written back. The same object feeds the CLI, the W&B run config and the model bundle.

Units: every rate is a fraction (``0.001`` = 0.1 %), ``_bps`` is basis points, ``_quote`` is quote
currency (USD for BTC/USD), ``_base`` base currency (BTC), ``_bars`` a count of bars.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from coinrl.pipeline.config import Fraction, FrozenModel, validate_config

RewardName = Literal["log_return", "simple_return", "differential_sharpe", "drawdown_penalised"]
ActionMode = Literal["discrete", "continuous"]
ObsMode = Literal["box", "dict"]

NonNegFloat = Annotated[float, Field(ge=0.0)]


class EnvConfig(FrozenModel):
    """Execution, account and episode settings of :class:`~coinrl.envs.trading_env.TradingEnv`.

    Attributes:
        window: bars of features in one observation (rows ``t-window+1 .. t``).
        action: ``"discrete"`` (choose one of ``positions``) or ``"continuous"`` (a target
            exposure in ``[-max_leverage, max_leverage]``, ``[0, max_leverage]`` without shorting).
        positions: target exposures of the discrete actions (exposure = position notional /
            equity; ``1`` = all equity long, ``-1`` = short the whole equity). Default
            ``(-1, 0, 1)``, or ``(0, 1)`` when ``allow_short=False``; see
            :attr:`discrete_positions`.
        obs_mode: ``"box"`` (flat float32 vector: window features then account state) or
            ``"dict"`` (``{"market": (window, F), "account": (4,)}``).
        initial_cash_quote: starting cash in quote currency.
        taker_fee_rate: fee on market orders as a fraction of notional (every env order is a
            market order: the env pays taker).
        maker_fee_rate: fee on resting limit orders (used by brokers; the env never makes).
        slippage_bps: fixed slippage against the reference price (the bar's open), in bps.
        impact_coef: volume-participation impact: extra slippage fraction
            ``impact_coef * traded_qty_base / bar_volume_base``.
        max_impact_frac: cap on the impact fraction (a bar with ~zero volume cannot cost more).
        min_notional_quote: orders below this notional are rejected (not filled), as on a real
            exchange; closing to flat is always allowed (a reduce-only close).
        lot_size_base: order quantities are rounded toward zero to a multiple of this (0 = off).
        rebalance_threshold: skip a rebalance whose notional is below this fraction of equity
            (drift of a held position inside the band is not traded; moving to flat always is).
        delay_bars: a decision at bar t's close fills at ``open[t + delay_bars]`` (>= 1).
        allow_short: whether negative exposures are allowed.
        max_leverage: largest ``|exposure|``. ``allow_short=False`` with ``max_leverage=1`` is a
            spot account, whose cash and position never go below zero.
        maintenance_margin_rate: maintenance margin as a fraction of position notional; equity
            below it liquidates the position (``terminated=True``).
        borrow_rate_per_bar: charged every bar on borrowed value (short base notional at the
            close plus negative cash), a fraction per bar.
        use_funding: charge ``MarketData.funding_rate`` (perpetuals) when the data has it (never
            for a spot account).
        episode_length_bars: steps per episode from a random start; ``None`` = the whole data
            from its first possible decision bar.
        reward: ``log_return`` | ``simple_return`` | ``differential_sharpe`` |
            ``drawdown_penalised`` (see :mod:`coinrl.envs.rewards`).
        dsr_eta: adaptation rate of the differential Sharpe ratio's moving moments.
        drawdown_penalty: weight of a new drawdown (fraction of peak equity) in
            ``drawdown_penalised``.
        turnover_penalty: subtracted from every reward kind, times the step's traded notional
            over the equity at the previous close (``|Δexposure|`` summed over assets, forced
            liquidation fills included): a charge for trading beyond the books' own fees and
            slippage (already in the equity), so a policy learns to change its mind less.
            ``0`` (default) leaves every reward bit for bit as without it
            (:func:`coinrl.envs.rewards.turnover_cost`).
    """

    window: Annotated[int, Field(ge=1)] = 24
    action: ActionMode = "discrete"
    positions: tuple[float, ...] | None = None
    obs_mode: ObsMode = "box"

    initial_cash_quote: Annotated[float, Field(gt=0.0)] = 10_000.0
    taker_fee_rate: Fraction = 0.001
    maker_fee_rate: Fraction = 0.0008
    slippage_bps: Annotated[float, Field(ge=0.0, le=10_000.0)] = 1.0
    impact_coef: NonNegFloat = 0.0
    max_impact_frac: Fraction = 0.05
    min_notional_quote: NonNegFloat = 0.0
    lot_size_base: NonNegFloat = 0.0
    rebalance_threshold: Fraction = 0.01
    delay_bars: Annotated[int, Field(ge=1)] = 1

    allow_short: bool = True
    max_leverage: Annotated[float, Field(gt=0.0, le=125.0)] = 1.0
    maintenance_margin_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.005
    borrow_rate_per_bar: Fraction = 0.0
    use_funding: bool = True

    episode_length_bars: Annotated[int, Field(ge=1)] | None = 720
    reward: RewardName = "log_return"
    dsr_eta: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.01
    drawdown_penalty: NonNegFloat = 1.0
    turnover_penalty: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check_cross_fields(self) -> EnvConfig:
        if self.action == "discrete":
            if len(self.discrete_positions) < 2:
                raise ValueError("positions needs at least two target exposures, e.g. [-1, 0, 1]")
            for p in self.discrete_positions:
                if abs(p) > self.max_leverage:
                    raise ValueError(
                        f"position {p} exceeds max_leverage={self.max_leverage}; "
                        "raise max_leverage or use smaller exposures"
                    )
                if p < 0 and not self.allow_short:
                    raise ValueError(
                        f"position {p} is a short but allow_short=False; drop it or allow shorting"
                    )
        if self.max_leverage * self.maintenance_margin_rate >= 1.0:
            raise ValueError(
                f"max_leverage={self.max_leverage} with maintenance_margin_rate="
                f"{self.maintenance_margin_rate} liquidates on entry; lower one of them"
            )
        if self.slippage_bps * 1e-4 + self.max_impact_frac + self.taker_fee_rate >= 1.0:
            raise ValueError("taker_fee_rate + slippage + max_impact_frac must stay below 1")
        return self

    @property
    def discrete_positions(self) -> tuple[float, ...]:
        """Target exposures of the discrete actions: ``positions`` or the default for the account."""
        if self.positions is not None:
            return tuple(float(p) for p in self.positions)
        return (-1.0, 0.0, 1.0) if self.allow_short else (0.0, 1.0)

    @property
    def is_spot(self) -> bool:
        """True for a cash account: no shorting and no leverage (never below zero)."""
        return not self.allow_short and self.max_leverage <= 1.0

    @property
    def slippage_frac(self) -> float:
        """Fixed slippage as a fraction of the reference price."""
        return self.slippage_bps * 1e-4

    @property
    def exposure_bounds(self) -> tuple[float, float]:
        """Lowest and highest target exposure the account may hold."""
        return (-self.max_leverage if self.allow_short else 0.0, self.max_leverage)


def env_config_from(config: EnvConfig | Mapping[str, Any] | None, **overrides: Any) -> EnvConfig:
    """Build an :class:`EnvConfig` from a model, a mapping or defaults, plus keyword overrides.

    Raises:
        ConfigError: an unknown key or out-of-range value, naming the field.

    Example:
        >>> env_config_from(None, window=8).window
        8
    """
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, EnvConfig):
        if not overrides:
            return config
        base = config.model_dump(exclude_unset=True)
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        from coinrl.pipeline.errors import ConfigError

        raise ConfigError(
            f"env config must be an EnvConfig or a mapping, got {type(config).__name__}"
        )
    base.update(overrides)
    return validate_config(EnvConfig, base, source="EnvConfig")


class AssetCosts(FrozenModel):
    """Per-asset execution overrides of a portfolio (None = the account's value).

    Units as in :class:`EnvConfig`: fractions, bps, quote, base.
    """

    taker_fee_rate: Fraction | None = None
    slippage_bps: Annotated[float, Field(ge=0.0, le=10_000.0)] | None = None
    impact_coef: NonNegFloat | None = None
    min_notional_quote: NonNegFloat | None = None
    lot_size_base: NonNegFloat | None = None
    maintenance_margin_rate: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None


class PortfolioEnvConfig(EnvConfig):
    """:class:`EnvConfig` for one account over A assets (cross margin).

    Attributes:
        action: ``"continuous"`` (target weights, see :class:`~coinrl.envs.actions.ActionMap`)
            or ``"discrete"`` (one of ``positions`` per asset, ``MultiDiscrete``).
        gross_leverage: budget on ``sum |w_a|`` (default ``max_leverage``; at most it).
        net_exposure_max: bound on ``|sum w_a|`` (default the gross budget).
        asset_costs: per-symbol overrides of fees, slippage, impact, lot size, min notional
            and maintenance margin.
    """

    action: ActionMode = "continuous"
    gross_leverage: Annotated[float, Field(gt=0.0)] | None = None
    net_exposure_max: Annotated[float, Field(ge=0.0)] | None = None
    asset_costs: dict[str, AssetCosts] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_budget(self) -> PortfolioEnvConfig:
        if self.gross_leverage is not None and self.gross_leverage > self.max_leverage:
            raise ValueError(
                f"gross_leverage={self.gross_leverage} exceeds max_leverage={self.max_leverage}; "
                "raise max_leverage or lower the budget"
            )
        if self.action == "discrete":
            for p in self.discrete_positions:
                if abs(p) > self.gross_budget:
                    raise ValueError(
                        f"discrete position {p} is beyond the gross budget {self.gross_budget}; "
                        "raise gross_leverage or use smaller positions"
                    )
        if self.delay_bars != 1:
            raise ValueError("portfolio envs fill at the next open only (delay_bars=1)")
        if self.obs_mode != "box":
            raise ValueError("portfolio envs have Box observations only (obs_mode='box')")
        return self

    @property
    def gross_budget(self) -> float:
        """The gross exposure budget ``sum |w_a|``."""
        return self.max_leverage if self.gross_leverage is None else self.gross_leverage

    @property
    def net_budget(self) -> float:
        """The bound on ``|sum w_a|``."""
        return self.gross_budget if self.net_exposure_max is None else self.net_exposure_max


def portfolio_config_from(
    config: PortfolioEnvConfig | EnvConfig | Mapping[str, Any] | None, **overrides: Any
) -> PortfolioEnvConfig:
    """A :class:`PortfolioEnvConfig` from a model, a mapping or defaults, plus overrides.

    Raises:
        ConfigError: an unknown key or out-of-range value, naming the field.
    """
    if isinstance(config, PortfolioEnvConfig) and not overrides:
        return config
    if isinstance(config, EnvConfig):
        base: dict[str, Any] = config.model_dump(exclude_unset=True)
    elif config is None:
        base = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        from coinrl.pipeline.errors import ConfigError

        raise ConfigError(f"portfolio config must be a PortfolioEnvConfig or a mapping, got {type(config).__name__}")
    base.update(overrides)
    return validate_config(PortfolioEnvConfig, base, source="PortfolioEnvConfig")
