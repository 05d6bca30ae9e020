"""`config.sids`: how items get Semantic IDs (stage `sids`)."""
import ml_collections

from sidjax.configs.rules import require

SOURCES = ("paper", "rqvae", "rqkmeans")
COLLISIONS = ("sinkhorn", "append", "none")
EMBEDDINGS = ("tfidf_lsa", "precomputed", "lm_mean_pool")
KMEANS_INITS = ("kmeans++", "random")
RQVAE_DTYPES = ("float32", "bfloat16", "auto")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # paper: the papers' index.json (the shipped one, or `path`); rqvae / rqkmeans: learn SIDs from embeddings.
    c.source = "paper"
    c.path = ""  # index.json for source=paper; empty = the shipped data's own index.
    c.levels = 3
    c.codebook_size = 256
    # Items that still share a SID after quantization:
    #   sinkhorn: the papers' Sinkhorn re-assignment of the last level (for source=paper the shipped
    #             SIDs are already its output and are kept); append: one extra level numbering the
    #             items of each shared SID, so every SID is unique; none: keep them.
    c.collision = "sinkhorn"
    c.sinkhorn_epsilon = 0.003
    c.sinkhorn_iters = 50

    c.embed = ml_collections.ConfigDict()
    # tfidf_lsa: offline, no weights (TF-IDF over title/brand/categories/description, truncated SVD);
    # precomputed: a .npy [num_items, D] at `embed.path`; lm_mean_pool: mean-pooled hidden states of
    # the project's causal LM loaded from `config.model` over title + description.
    c.embed.method = "tfidf_lsa"
    c.embed.path = ""
    c.embed.dim = 256  # tfidf_lsa: number of LSA components.
    c.embed.min_df = 2  # tfidf_lsa: ignore terms in fewer items.
    c.embed.max_df = 0.5  # tfidf_lsa: ignore terms in more than this fraction of items.
    c.embed.title_weight = 2.0  # tfidf_lsa: title terms count this many times a description term.
    c.embed.batch_size = 32  # lm_mean_pool
    c.embed.max_length = 128  # lm_mean_pool: tokens per item text.

    c.kmeans = ml_collections.ConfigDict()  # RQ-KMeans, and the RQ-VAE codebook initialisation.
    c.kmeans.iters = 50
    c.kmeans.init = "kmeans++"
    c.kmeans.balanced = True  # RQ-KMeans: cap clusters at ceil(N / K) items (fewer collisions).
    c.kmeans.balanced_iters = 5  # capacity-constrained refinement steps after the plain ones.

    c.rqvae = ml_collections.ConfigDict()
    c.rqvae.hidden = (512, 256, 128)  # encoder widths (decoder mirrors them).
    c.rqvae.code_dim = 32
    c.rqvae.beta = 0.25  # commitment loss weight.
    c.rqvae.quant_weight = 1.0  # weight of the codebook + commitment losses against reconstruction.
    c.rqvae.epochs = 300
    c.rqvae.batch_size = 1024
    c.rqvae.learning_rate = 1e-3
    c.rqvae.weight_decay = 1e-4
    c.rqvae.kmeans_init = True  # first batch of latents -> k-means codebooks.
    c.rqvae.dead_code_every = 10  # epochs between re-seeding unused codes (0: never).
    c.rqvae.report_every = 10  # epochs between usage / perplexity / collision reports.
    c.rqvae.checkpoint = True  # save the trained quantizer under sids/rqvae_checkpoint/.
    # encoder / decoder matmul dtype: float32 | bfloat16 | auto (as model.dtype: bfloat16 where the hardware
    # runs it fast); weights, latents, codebook distances and losses stay float32.
    c.rqvae.dtype = "float32"
    return c


def sid_length(config: ml_collections.ConfigDict) -> int:
    """Tokens of one item's SID that `config` makes: the learned levels, the collision policy's extra
    level (append), the domain prefix of a mix."""
    return config.sids.levels + (config.sids.collision == "append") + (config.data.source == "mix")


def validate(c: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
    require(c.source in SOURCES, f"{name}.source", f"'{c.source}' is not one of {SOURCES}")
    require(c.levels >= 1, f"{name}.levels", "must be >= 1")
    require(c.codebook_size >= 2, f"{name}.codebook_size", "must be >= 2")
    require(c.collision in COLLISIONS, f"{name}.collision", f"'{c.collision}' is not one of {COLLISIONS}")
    require(c.levels + (c.collision == "append") <= 26, f"{name}.levels", "at most 26 levels (letters a..z)")
    require(c.sinkhorn_epsilon > 0, f"{name}.sinkhorn_epsilon", "must be > 0")
    require(c.sinkhorn_iters >= 1, f"{name}.sinkhorn_iters", "must be >= 1")
    e = c.embed
    require(e.method in EMBEDDINGS, f"{name}.embed.method", f"'{e.method}' is not one of {EMBEDDINGS}")
    require(e.method != "precomputed" or bool(e.path), f"{name}.embed.path", "method 'precomputed' needs a .npy path")
    require(e.dim >= 1, f"{name}.embed.dim", "must be >= 1")
    require(e.min_df >= 1, f"{name}.embed.min_df", "must be >= 1")
    require(0 < e.max_df <= 1, f"{name}.embed.max_df", "must be in (0, 1]")
    require(e.title_weight > 0, f"{name}.embed.title_weight", "must be > 0")
    require(
        e.method != "lm_mean_pool" or config.model.source in ("hf", "gguf"),
        f"{name}.embed.method",
        f"'lm_mean_pool' needs a pretrained LM (model.source 'hf' or 'gguf'), not '{config.model.source}'",
    )
    require(e.batch_size >= 1, f"{name}.embed.batch_size", "must be >= 1")
    require(e.max_length >= 1, f"{name}.embed.max_length", "must be >= 1")
    k = c.kmeans
    require(k.iters >= 1, f"{name}.kmeans.iters", "must be >= 1")
    require(k.balanced_iters >= 1, f"{name}.kmeans.balanced_iters", "must be >= 1")
    require(k.init in KMEANS_INITS, f"{name}.kmeans.init", f"'{k.init}' is not one of {KMEANS_INITS}")
    r = c.rqvae
    require(len(r.hidden) >= 1 and min(r.hidden) >= 1, f"{name}.rqvae.hidden", "needs >= 1 positive widths")
    require(r.code_dim >= 1, f"{name}.rqvae.code_dim", "must be >= 1")
    require(r.beta >= 0, f"{name}.rqvae.beta", "must be >= 0")
    require(r.quant_weight >= 0, f"{name}.rqvae.quant_weight", "must be >= 0")
    require(r.epochs >= 1, f"{name}.rqvae.epochs", "must be >= 1")
    require(r.batch_size >= 1, f"{name}.rqvae.batch_size", "must be >= 1")
    require(r.learning_rate > 0, f"{name}.rqvae.learning_rate", "must be > 0")
    require(r.weight_decay >= 0, f"{name}.rqvae.weight_decay", "must be >= 0")
    require(r.dead_code_every >= 0, f"{name}.rqvae.dead_code_every", "must be >= 0")
    require(r.report_every >= 1, f"{name}.rqvae.report_every", "must be >= 1")
    require(r.dtype in RQVAE_DTYPES, f"{name}.rqvae.dtype", f"'{r.dtype}' is not one of {RQVAE_DTYPES}")
