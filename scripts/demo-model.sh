# The demo's model shape, sourced by demo.sh, compare-builds.sh and bench-decoders.sh so the
# model they train is one definition: E = 64, 4 heads, byte vocabulary (128 ids), 1 prelude /
# 1 core / 1 coda layer, tied embeddings.
# demo_model_config MEAN BACKPROP  -> the config.json on stdout (mean recurrence, backprop depth)
demo_model_config() {
  cat <<EOF_CONFIG
{"name": "huginn-demo", "block_size": 96, "vocab_size": 128, "n_embd": 64,
 "num_attention_heads": 4, "intermediate_size": 128, "n_layers_in_prelude": 1,
 "n_layers_in_recurrent_block": 1, "n_layers_in_coda": 1, "mean_recurrence": $1,
 "mean_backprop_depth": $2, "tie_embeddings": true, "qk_bias": true}
EOF_CONFIG
}
