r"""The "how it works" text: the objective, the update rule and what the knobs do.

Pure functions returning Markdown (with ``$...$`` LaTeX, as ``st.markdown``
renders it) for the chosen model and beta. Nothing here imports nmfcore or
streamlit.
"""

from __future__ import annotations

__all__ = ["beta_name", "objective_md", "model_md", "update_md", "knobs_md", "how_it_works_md", "EM_MODELS",
           "em_objective_md", "em_update_md"]

#: Registry names of the probabilistic models fitted by EM (nmfcore.plca)
EM_MODELS = ("PLCA", "SIPLCA")


def beta_name(beta: float) -> str:
    if beta == 2:
        return "Euclidean distance"
    if beta == 1:
        return "Kullback-Leibler divergence"
    if beta == 0:
        return "Itakura-Saito divergence"
    return f"beta-divergence with beta = {beta:g}"


def objective_md(beta: float) -> str:
    """The per-entry divergence $d_\\beta(v|\\hat v)$ for this beta, summed over the spectrogram."""
    if beta == 2:
        d = r"\tfrac12 (v - \hat v)^2"
        note = ("squared error: loud bins dominate, so the fit spends its effort on the strongest "
                "partials.")
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
        d = (rf"\frac{{v^{{{beta:g}}} + ({beta:g}-1)\,\hat v^{{{beta:g}}} - {beta:g}\, v\, \hat v^{{{beta:g}-1}}}}"
             rf"{{{beta:g}\,({beta:g}-1)}}")
        note = ("between the named cases: beta = 2 is the squared error, 1 Kullback-Leibler, "
                "0 Itakura-Saito; smaller beta gives quiet bins more weight.")
    return (f"**Objective** ({beta_name(beta)}): the model $\\hat V$ is fitted to the magnitude "
            f"spectrogram $V$ by minimising $D(V|\\hat V) = \\sum_{{f,t}} d_\\beta(v_{{ft}}|\\hat v_{{ft}})$ with\n\n"
            f"$$d_\\beta(v|\\hat v) = {d}$$\n\n{note}")


def model_md(model: str) -> str:
    """The model equation of the registry entry ``model`` (a generic sentence for unknown ones)."""
    if model == "NMF":
        return ("**Model** (NMF): $V \\approx \\hat V = W H$. Each column of $W$ (frequency x rank) "
                "is a spectral template, each row of $H$ (rank x frames) says how loud that "
                "template is over time.")
    if model == "NMFD":
        return ("**Model** (NMFD, convolutive in time): $\\hat V = \\sum_{\\tau=0}^{T-1} W_\\tau\\, "
                "\\overset{\\tau\\rightarrow}{H}$. A template is a short spectrogram patch of $T$ "
                "frames (an onset and its decay), and $\\overset{\\tau\\rightarrow}{H}$ is $H$ shifted "
                "right by $\\tau$ frames.")
    if model == "NMF2D":
        return ("**Model** (NMF2D, convolutive in time and frequency): $\\hat V = \\sum_{\\tau}\\sum_{\\phi} "
                "\\overset{\\downarrow\\phi}{W_\\tau}\\, \\overset{\\tau\\rightarrow}{H_\\phi}$. A template "
                "can be shifted up in frequency by $\\phi$ bins, so one template can play several "
                "pitches (best with a log-frequency spectrogram).")
    if model == "PLCA":
        return ("**Model** (PLCA, probabilistic latent component analysis): the spectrogram divided by its "
                "sum is read as a probability distribution over time-frequency bins, $P(f, t)$, and "
                "explained by $R$ latent components $z$: $P(f, t) \\approx \\sum_z P(f|z)\\, P(z)\\, P(t|z)$. "
                "$P(f|z)$ (a column of $W$) is the component's spectrum, $P(t|z)$ (a row of $H$) when it "
                "sounds, $P(z)$ how much of the recording it explains. Each of them sums to one; it is NMF "
                "with $W$, $\\mathrm{diag}(Z)$ and $H$ as probabilities.")
    if model == "SIPLCA":
        return ("**Model** (SI-PLCA, shift-invariant PLCA): $P(f, t) \\approx \\sum_z P(z) \\sum_\\tau "
                "P(f, \\tau|z)\\, P(t - \\tau|z)$. A component is a distribution over a patch of $T$ frames "
                "(its kernel), placed at the times where $P(t|z)$ has mass: NMFD with probabilities.")
    return (f"**Model** ({model}): a non-negative factorisation of the spectrogram into "
            "templates and activations; see the model's description above.")


def update_md(beta: float) -> str:
    """The multiplicative update (Lee & Seung, Févotte & Idier) with the MM exponent for beta."""
    if beta < 1:
        gamma = f"1/(2-\\beta) = {1 / (2 - beta):.3g}"
    elif beta <= 2:
        gamma = "1"
    else:
        gamma = f"1/(\\beta-1) = {1 / (beta - 1):.3g}"
    return ("**Update rule** (multiplicative updates): alternately for $H$ and $W$,\n\n"
            "$$H \\leftarrow H \\odot \\left(\\frac{W^\\top\\left[\\hat V^{\\,\\beta-2} \\odot V\\right]}"
            "{W^\\top \\hat V^{\\,\\beta-1}}\\right)^{\\gamma},\\qquad "
            "W \\leftarrow W \\odot \\left(\\frac{\\left[\\hat V^{\\,\\beta-2} \\odot V\\right] H^\\top}"
            "{\\hat V^{\\,\\beta-1} H^\\top}\\right)^{\\gamma}$$\n\n"
            f"with $\\gamma = {gamma}$ here. Numerator and denominator are the negative and positive "
            "parts of the gradient, so factors stay non-negative and the objective never increases. "
            "For convolutive models $W^\\top$ becomes the adjoint of the convolution (a correlation).")


def knobs_md() -> str:
    return ("**From components to sources**: component $r$ gets the soft mask "
            "$M_r = \\hat V_r^{\\,p} / \\sum_k \\hat V_k^{\\,p}$ (an alpha-Wiener filter) on the "
            "mixture's complex STFT, then the inverse STFT; the masks sum to one, so the "
            "components add up to the mixture. A source is the sum of the components you assign "
            "to it; the residual is whatever is left.\n\n"
            "**What the settings change**\n"
            "- *Rank*: the number of components. Too small and instruments share templates; too "
            "large and one note splits over several components (group them afterwards).\n"
            "- *Beta*: which errors count. 2 chases loud bins, 1 (KL) is a good default for "
            "magnitudes, 0 (IS) treats all levels alike.\n"
            "- *Kernel size* (convolutive models): how many frames (and frequency shifts) one "
            "template spans.\n"
            "- *Sparseness*: forces each component's activations to be peaky (fewer, sharper "
            "events).\n"
            "- *Initialisation and seed*: NMF has many local minima; NNDSVD starts from the "
            "spectrogram's singular vectors, random from a seeded draw.\n"
            "- *STFT size / hop*: frequency versus time resolution of the spectrogram.")


def em_objective_md() -> str:
    """The objective of the EM models: the log-likelihood of the normalised spectrogram."""
    return ("**Objective** (log-likelihood): with $v_{ft} = V_{ft} / \\sum V$ the fit maximises "
            "$\\mathcal{L} = \\sum_{f,t} v_{ft} \\log \\hat v_{ft}$, the same as minimising the "
            "Kullback-Leibler divergence of the model from the data (beta = 1; beta does not apply). "
            "Dirichlet priors on $W$, $H$ and $Z$ would add $\\sum (\\alpha - 1) \\log p$ terms: "
            "$\\alpha > 1$ smooths a distribution, $\\alpha < 1$ makes it sparse "
            "(`fit(W_alpha=..., H_alpha=..., Z_alpha=...)` in `nmfcore.plca`; the app uses no priors). "
            "The live curve shows $\\mathcal{L}$: it never decreases.")


def em_update_md() -> str:
    """The EM update (Smaragdis & Raj 2007) as the KL multiplicative step plus prior counts."""
    return ("**Update rule** (expectation-maximisation): the E-step gives every bin's posterior over the "
            "components, $P(z|f,t) = P(f|z) P(z) P(t|z) / \\hat v_{ft}$; the M-step sets each distribution "
            "to its expected counts $\\sum v_{ft} P(z|f,t)$ (plus $\\alpha - 1$ with a prior), renormalised:\n\n"
            "$$W \\leftarrow \\operatorname{normalise}\\Big(W \\odot \\big[(V / \\hat V)\\, H^\\top\\big]\\Big),"
            "\\qquad H \\leftarrow \\operatorname{normalise}\\Big(H \\odot \\big[W^\\top (V / \\hat V)\\big]\\Big)$$\n\n"
            "and $P(z)$ takes the total count of each component. This is the Kullback-Leibler multiplicative "
            "update of NMF (exponent 1) followed by a normalisation, so each step cannot lower the likelihood. "
            "For SI-PLCA the products become the correlations of the convolution, as in NMFD.")


def how_it_works_md(model: str, beta: float) -> list[str]:
    """The panel's paragraphs for this model and beta, in order (the EM models have no beta)."""
    if model in EM_MODELS:
        return [model_md(model), em_objective_md(), em_update_md(), knobs_md()]
    return [model_md(model), objective_md(beta), update_md(beta), knobs_md()]
