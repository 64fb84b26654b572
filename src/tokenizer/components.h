// Builds pipeline components from tokenizer.json nodes. `where` is the JSON path used in error
// messages ("FILE: pre_tokenizer.pretokenizers[0]"). An unknown or unsupported component type
// throws huginn::Error naming it, so a tokenizer is never silently encoded differently.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/pipeline.h"

namespace huginn::tok {

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
// *deferred is set when the pre-tokenizer ends with a ByteLevel step that leaves its byte
// mapping to the model.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where,
                                                 bool* deferred);
// The ByteLevel decoder's bytes for one token (appended to `bytes`): the byte of each character
// when all are byte-level characters, else the token's own text.
void byte_level_token_bytes(std::string_view token, std::string& bytes);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j,
                                                   const std::string& where);

}  // namespace huginn::tok
