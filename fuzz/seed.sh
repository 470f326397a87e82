#!/bin/sh
# Seeds the fuzz corpus with every .canspec file in the repository's specs/ (and its subfolders).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/parse"
mkdir -p "$corpus"
find "$here/../specs" -name '*.canspec' -type f | while read -r f; do
    name=$(printf '%s' "${f#"$here/../specs/"}" | tr '/' '_')
    cp "$f" "$corpus/seed_$name"
done
echo "corpus: $(ls "$corpus" | wc -l) files in $corpus"
