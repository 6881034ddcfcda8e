r"""The "how it works" text, written from the settings of the fit that runs.

Pure functions returning Markdown (with ``$...$`` LaTeX, as ``st.markdown``
renders it). They take a :class:`FitDescription`, plain values the service
layer fills in from the settings and from the engine (which solver it runs),
so the text follows what actually runs. Nothing here imports nmfcore or
streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FitDescription", "beta_name", "objective_md", "model_md", "update_md", "minibatch_md", "masks_md",
           "knobs_md", "how_it_works_md"]


@dataclass(frozen=True)
class FitDescription:
    """What the text needs to know about a fit."""

    model: str                  # registry name: 'NMF', 'NMFD', 'NMF2D', 'PLCA', ...
    label: str                  # the model's human-readable name
    beta: float | None          # None: the model does not minimise a beta-divergence (EM models)
    solver: str                 # 'mu', 'hals', 'projected_gradient' or 'em' (as the engine resolves it)
    kernel_dims: int = 0        # 0 matrix, 1 time patterns, 2 time-frequency patches
    kernel: tuple = ()          # the kernel the model uses: (frames,) or (bins, frames)
    shifts: int | None = None   # 2-D models: how many frequency shifts H has
    sparsity_H: float | None = None
    continuity: float = 0.0
    mask_power: float = 1.0
    power: float = 1.0
    device: str = "cpu"
    minibatch: str | None = None  # a mini-batch solver of nmfcore.minibatch ('asg_mu', ...), None: full batch
    batch_size: int = 0           # its frames per batch


def _num(x: float) -> str:
    """A number for a formula: negative values in parentheses, so that "-" never meets "-"."""
    return f"({x:g})" if x < 0 else f"{x:g}"


def beta_name(beta: float) -> str:
    if beta == 2:
        return "Euclidean distance"
    if beta == 1:
        return "Kullback-Leibler divergence"
    if beta == 0:
        return "Itakura-Saito divergence"
    return f"beta-divergence with β = {beta:g}"


def objective_md(beta: float | None, power: float = 1.0) -> str:
    """The per-entry divergence $d_\\beta(v|\\hat v)$ for this beta, summed over the spectrogram."""
    what = "magnitude" if power == 1 else ("power" if power == 2 else f"magnitude$^{{{power:g}}}$")
    if beta is None:
        return (f"**Objective**: the {what} spectrogram, scaled to sum to one, is read as a probability "
                "distribution over time-frequency bins, and the model's distribution is fitted to it by "
                "maximum likelihood (equivalently, the Kullback-Leibler divergence is minimised).")
    if beta == 2:
        d = r"\tfrac12 (v - \hat v)^2"
        note = "squared error: loud bins dominate, so the fit spends its effort on the strongest partials."
    elif beta == 1:
        d = r"v \log\frac{v}{\hat v} - v + \hat v"
        note = ("the generalised Kullback-Leibler divergence, the usual choice for magnitude "
                "spectrograms: quieter bins count more than under the squared error.")
    elif beta == 0:
        d = r"\frac{v}{\hat v} - \log\frac{v}{\hat v} - 1"
        note = ("scale-invariant: $d(\\lambda v|\\lambda \\hat v) = d(v|\\hat v)$, so quiet and loud "
                "time-frequency bins weigh the same (good for power spectrograms and reverb tails, "
                "slower to converge).")
    else:
        b, bm1 = _num(beta), _num(beta - 1)
        d = (rf"\frac{{v^{{{beta:g}}} + {bm1}\,\hat v^{{{beta:g}}} - {b}\, v\, \hat v^{{{beta - 1:g}}}}}"
             rf"{{{b}\,{bm1}}}")
        note = ("between and beyond the named cases: β = 2 is the squared error, 1 Kullback-Leibler, "
                "0 Itakura-Saito; a smaller β gives quiet bins more weight.")
    return (f"**Objective** ({beta_name(beta)}): the model $\\hat V$ is fitted to the {what} "
            f"spectrogram $V$ by minimising $D(V|\\hat V) = \\sum_{{f,t}} d_\\beta(v_{{ft}}|\\hat v_{{ft}})$ with\n\n"
            f"$$d_\\beta(v|\\hat v) = {d}$$\n\n{note}")


def model_md(fit: FitDescription) -> str:
    """The model equation for the fit's model family."""
    if fit.solver == "em" and fit.kernel_dims == 0:
        return (f"**Model** ({fit.label}): the spectrogram divided by its sum is read as a probability "
                "distribution over time-frequency bins and explained by $R$ latent components $z$: "
                "$P(f, t) \\approx \\sum_z P(f|z)\\, P(z)\\, P(t|z)$. $P(f|z)$ (a column of $W$) is the "
                "component's spectrum, $P(t|z)$ (a row of $H$) when it sounds, $P(z)$ how much of the "
                "recording it explains; each sums to one. It is NMF with $W$, $\\mathrm{diag}(Z)$ and $H$ "
                "as probabilities.")
    if fit.solver == "em" and fit.kernel_dims == 1:
        T = fit.kernel[0] if fit.kernel else "T"
        return (f"**Model** ({fit.label}): $P(f, t) \\approx \\sum_z P(z) \\sum_\\tau P(f, \\tau|z)\\, "
                f"P(t - \\tau|z)$ with $T = {T}$ frames. A component is a distribution over a spectrogram "
                "patch, placed at the times where $P(t|z)$ has mass: NMFD with probabilities.")
    if fit.kernel_dims == 0:
        return (f"**Model** ({fit.label}): $V \\approx \\hat V = W H$. Each column of $W$ (frequency x rank) "
                "is a spectral template, each row of $H$ (rank x frames) says how loud that "
                "template is over time.")
    if fit.kernel_dims == 1:
        T = fit.kernel[0] if fit.kernel else "T"
        return (f"**Model** ({fit.label}, convolutive in time): $\\hat V = \\sum_{{\\tau=0}}^{{T-1}} W_\\tau\\, "
                f"\\overset{{\\tau\\rightarrow}}{{H}}$ with $T = {T}$ frames. A template is a short "
                "spectrogram patch (an onset and its decay), and $\\overset{\\tau\\rightarrow}{H}$ is $H$ "
                "shifted right by $\\tau$ frames: one activation starts the whole pattern.")
    kf, kt = fit.kernel if len(fit.kernel) == 2 else ("k_f", "k_t")
    s = fit.shifts if fit.shifts is not None else "several"
    if fit.solver == "em":
        return (f"**Model** ({fit.label}): the spectrogram is first put on a log-frequency axis (24 bins per "
                "octave), where moving a sound up by one bin raises its pitch by a quarter tone. Then "
                "$P(f, t) \\approx \\sum_z P(z) \\sum_{\\phi, \\tau} P(f - \\phi, \\tau|z)\\, P(\\phi, t - \\tau|z)$: "
                f"each component is a distribution over a patch of {kf} log-frequency bins by {kt} frames, "
                f"and its activation says at which of {s} pitch shifts $\\phi$ and when it sounds, so one "
                "template can play several notes. The masks are interpolated back to the STFT's bins.")
    return (f"**Model** ({fit.label}, convolutive in time and frequency): $\\hat V = \\sum_{{\\tau}}\\sum_{{\\phi}} "
            "\\overset{\\downarrow\\phi}{W_\\tau}\\, \\overset{\\tau\\rightarrow}{H_\\phi}$. Each template is a "
            f"patch of {kf} frequency bins by {kt} frames; its activation $H$ has a row per frequency shift "
            f"$\\phi$ ({s} here) as well as per frame, so one template can sound at {s} positions up the "
            "spectrum. With few shifts the patch spans most of the spectrum and a shift moves the whole "
            "sound slightly; many shifts (a small patch) would let the activations copy the spectrogram "
            "instead of explaining it.")


def _gamma(beta: float) -> str:
    if beta < 1:
        return f"1/(2-\\beta) = {1 / (2 - beta):.3g}"
    if beta <= 2:
        return "1"
    return f"1/(\\beta-1) = {1 / (beta - 1):.3g}"


_MU = ("$$H \\leftarrow H \\odot \\left(\\frac{W^\\top\\left[\\hat V^{\\,\\beta-2} \\odot V\\right]}"
       "{W^\\top \\hat V^{\\,\\beta-1}}\\right)^{\\gamma},\\qquad "
       "W \\leftarrow W \\odot \\left(\\frac{\\left[\\hat V^{\\,\\beta-2} \\odot V\\right] H^\\top}"
       "{\\hat V^{\\,\\beta-1} H^\\top}\\right)^{\\gamma}$$")


def update_md(fit: FitDescription) -> str:
    """How the factors are updated: the solver the engine runs for these settings."""
    conv = ("" if fit.kernel_dims == 0 else
            " For convolutive models $W^\\top$ becomes the adjoint of the convolution (a correlation).")
    if fit.solver == "em":
        return ("**Update rule** (expectation-maximisation): every iteration shares each bin of $V$ among "
                "the components in proportion to their share of $\\hat V$ (E step), then re-estimates each "
                "component's template and activation from its share (M step). The likelihood never decreases "
                "and all factors stay non-negative and normalised. The M step is the Kullback-Leibler "
                "multiplicative update of NMF (exponent 1) followed by a normalisation:\n\n"
                "$$W \\leftarrow \\operatorname{normalise}\\Big(W \\odot \\big[(V / \\hat V)\\, H^\\top\\big]\\Big),"
                "\\qquad H \\leftarrow \\operatorname{normalise}\\Big(H \\odot \\big[W^\\top (V / \\hat V)\\big]\\Big)$$\n\n"
                "($W$ with $\\mathrm{diag}(Z)$ folded in; $P(z)$ takes each component's total share). "
                "**Dirichlet priors** (`fit(W_alpha=, H_alpha=, Z_alpha=)` in `nmfcore.plca`; the app uses "
                "none) add $\\alpha - 1$ to every share before the normalisation: $\\alpha > 1$ smooths a "
                "distribution, $\\alpha < 1$ makes it sparse. The live curve is the log-likelihood "
                "$\\sum v \\log \\hat v$ of the normalised spectrogram.")
    if fit.solver == "hals":
        return ("**Update rule** (hierarchical alternating least squares, HALS): for the Euclidean distance on "
                "the CPU the engine updates one component at a time, exactly: with the others fixed, the best "
                "non-negative activation row $h_r$ is\n\n"
                "$$h_r \\leftarrow \\max\\!\\left(0,\\; h_r + \\frac{[W^\\top V]_{r} - [W^\\top W H]_{r}}"
                "{[W^\\top W]_{rr}}\\right)$$\n\n"
                "and likewise for each template $w_r$. Each sweep solves a small least-squares problem per component, so "
                "it reaches a given loss in fewer iterations than multiplicative updates; the loss never "
                "increases.")
    beta = 1.0 if fit.beta is None else fit.beta
    mu = (f"{_MU}\n\nwith $\\gamma = {_gamma(beta)}$ here. Numerator and denominator are the negative and "
          "positive parts of the gradient, so the factors stay non-negative and the objective never "
          f"increases.{conv}")
    if fit.solver == "projected_gradient":
        return (f"**Update rule** (projected gradient for sparse activations, sparseness {fit.sparsity_H:g}): "
                "every row of $H$ takes a gradient step and is then projected back onto the non-negative "
                "vectors with the chosen Hoyer sparseness (the ratio of its L1 and L2 norms); the step "
                "shrinks until the loss does not increase. $W$ takes the multiplicative update\n\n"
                f"{mu}")
    text = "**Update rule** (multiplicative updates): alternately for $H$ and $W$,\n\n" + mu
    if fit.minibatch:
        text += "\n\n" + minibatch_md(fit.minibatch, fit.batch_size)
    if fit.continuity:
        text += (f"\n\n**Temporal continuity** (weight {fit.continuity:g}, relative to the data): a penalty on "
                 "the squared differences between neighbouring frames of each activation row, divided by the "
                 "row's energy, is added to the objective (Virtanen 2007). It joins the numerator and "
                 "denominator of $H$'s update, so a component prefers to follow a sound that lasts over "
                 "flickering on and off. With it the update of $H$ is a heuristic: the objective usually, "
                 "but not provably, decreases.")
    return text


#: what each mini-batch solver does with W (Serizel, Essid and Richard, MLSP 2016)
MINIBATCH_TEXT = {
    "mu_batch": "sums the gradient parts of $W$ over all batches and updates $W$ once per epoch: the same "
                "steps as full-batch multiplicative updates, computed one batch at a time.",
    "asg_mu": "updates $W$ after every batch from that batch alone: many cheap steps per epoch, but noisy "
              "(a quiet batch pulls the templates towards itself).",
    "gsg_mu": "updates $W$ once per epoch from one batch drawn at random: the cheapest epochs, the "
              "noisiest steps.",
    "asag_mu": "keeps every batch's last gradient parts and updates $W$ after every batch from their running "
               "sums (stochastic average gradient): steps about as steady as full batch, as frequent as "
               "asg_mu.",
    "gsag_mu": "keeps the running sums of the average gradient, refreshed from one random batch, and "
               "updates $W$ once per epoch.",
}


def minibatch_md(solver: str, batch_size: int) -> str:
    """One or two sentences on a mini-batch solver."""
    return (f"**Mini-batch solver** (`{solver}`, batches of {batch_size} frames): the frames are visited in "
            "batches; each batch's activations $H_b$ take one update with $W$ fixed, and the solver "
            f"{MINIBATCH_TEXT.get(solver, 'updates W from the batches.')} The curve shows the loss after each "
            "epoch (one pass over all frames).")


def masks_md(mask_power: float) -> str:
    p = f"{mask_power:g}"
    how = ("the components' modelled magnitudes share each bin in proportion"
           if mask_power == 1 else
           "like a Wiener filter, louder components take a larger share of each bin"
           if mask_power == 2 else
           "a larger exponent moves the masks towards all-or-nothing, a smaller one towards equal shares")
    return ("**From components to sources**: component $r$ gets the soft mask "
            f"$M_r = \\hat V_r^{{\\,p}} / \\sum_k \\hat V_k^{{\\,p}}$ with mask exponent $p = {p}$ ({how}) on "
            "the mixture's complex STFT, then the inverse STFT. The masks sum to one, so the components "
            "add up to the mixture exactly. A source is the sum of the components you assign to it; the "
            "residual is whatever is left.")


def knobs_md(fit: FitDescription) -> str:
    lines = ["**What the settings change**",
             "- *Rank*: the number of components. Too small and instruments share templates; too large and "
             "one note splits over several components (group them afterwards)."]
    if fit.beta is not None:
        lines.append("- *β*: which errors count. 2 chases loud bins, 1 (KL) suits magnitudes, "
                     "0 (IS) treats all levels alike.")
    if fit.kernel_dims == 1:
        lines.append("- *Kernel size*: how many frames one template spans (long enough for an onset and "
                     "its decay).")
    if fit.kernel_dims == 2:
        lines.append("- *Frequency shifts and frames*: how far up the spectrum a template may move and how "
                     "many frames it spans; few shifts keep the components meaningful and the fit fast.")
    lines += ["- *Sparse activations*: force each activation row to be peaky (fewer, sharper events); "
              "the fit then uses projected gradient steps for $H$.",
              "- *Temporal continuity* (NMF, NMFD): smooth activations that follow sustained sounds.",
              "- *Initialisation and seed*: NMF has many local minima; NNDSVD starts from the "
              "spectrogram's singular vectors, random from a seeded draw.",
              "- *STFT size / hop*: frequency versus time resolution of the spectrogram."]
    if fit.model == "NMF":
        lines.append("- *Solver* (NMF): full batch uses the whole spectrogram at every iteration; a mini-batch "
                     "solver updates from batches of frames, so each epoch is cheaper and memory stays small, "
                     "at the price of noisier steps for the stochastic ones.")
    return "\n".join(lines)


def how_it_works_md(fit: FitDescription) -> list[str]:
    """The panel's paragraphs for this fit, in order."""
    return [model_md(fit), objective_md(fit.beta, fit.power), update_md(fit), masks_md(fit.mask_power),
            knobs_md(fit)]
