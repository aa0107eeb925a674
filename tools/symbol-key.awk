# key(symbol): a symbol's name without what changes from build to build — legacy Rust
# mangling's hash, v0 mangling's crate disambiguators, LTO's numbered copies, aws-lc's
# version prefix — so tools/startup-order.txt still names a function after an update.
function key(s) {
    sub(/\.llvm\.[0-9]+$/, "", s)
    sub(/\.[0-9]+$/, "", s)
    sub(/17h[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]E/, "E", s)
    if (s ~ /^_R/) gsub(/Cs[0-9A-Za-z]+_/, "C", s)
    gsub(/aws_lc_[0-9]+_[0-9]+_[0-9]+_/, "aws_lc_", s)
    return s
}
