# Few-shot adaptation (sourced by scripts/demo.sh after 20-susceptibility.sh): the meta model
# trained on the north adapts to the blocks of the south with K samples per block, without
# meta-training again. The rest of the south scores three maps at the same points: the same
# model without adaptation, the adapted model, and a random forest trained on the north plus
# the same K samples per block.
ECU="${ECU:-$DATA/ecuador}"
K=5
SAMPLE_CSV=(-oo X_POSSIBLE_NAMES=x -oo Y_POSSIBLE_NAMES=y -oo AUTODETECT_TYPE=YES -a_srs EPSG:32717)

run_as adapt slidewise:adaptsusceptibility "MODEL=$OUT/susceptibility_model.safetensors" \
  "INPUT=$ECU/ta.tif" "INVENTORY=$OUT/validation_points.gpkg" LABEL_FIELD=lslpts \
  "BLOCKS=$OUT/blocks.tif" SHOTS=$K "OUTPUT=$OUT/adapted_model.safetensors" \
  "OUTPUT_SAMPLES=$OUT/adapted_samples.csv"
# The southern points the adaptation did not use, and the random forest's training points.
ogr2ogr -q -overwrite -f GPKG "$OUT/adapt_holdout.gpkg" "$OUT/adapted_samples.csv" \
  "${SAMPLE_CSV[@]}" -nln adapt_holdout -where "role = 'holdout'"
ogr2ogr -q -overwrite -f GPKG "$OUT/rf_points.gpkg" "$OUT/train_points.gpkg" -nln rf_points \
  -select lslpts
ogr2ogr -q -append -f GPKG "$OUT/rf_points.gpkg" "$OUT/adapted_samples.csv" "${SAMPLE_CSV[@]}" \
  -nln rf_points -sql "SELECT label AS lslpts FROM adapted_samples WHERE role = 'support'"

run_as adapt_rf_train slidewise:trainsusceptibility "INPUT=$ECU/ta.tif" \
  "INVENTORY=$OUT/rf_points.gpkg" LABEL_FIELD=lslpts METHOD=1 CV_FOLDS=0 \
  "OUTPUT=$OUT/rf_north_plus_k.safetensors"
run_as adapt_rf_predict slidewise:predictsusceptibility "MODEL=$OUT/rf_north_plus_k.safetensors" \
  "INPUT=$ECU/ta.tif" "OUTPUT=$OUT/susceptibility_rf_north_plus_k.tif"
run_as adapt_predict slidewise:predictsusceptibility "MODEL=$OUT/adapted_model.safetensors" \
  "INPUT=$ECU/ta.tif" "OUTPUT=$OUT/susceptibility_adapted.tif"
for map in susceptibility susceptibility_adapted susceptibility_rf_north_plus_k; do
  run_as "adapt_evaluate_$map" slidewise:evaluatesusceptibility "INPUT=$OUT/$map.tif" \
    "INVENTORY=$OUT/adapt_holdout.gpkg" LABEL_FIELD=label "OUTPUT=$OUT/adapt_eval_$map.html"
done

{
  echo
  echo "## Few-shot adaptation to the south (the northern meta model, K = $K samples per southern block)"
  echo "- adapted $(json "$OUT/adapt.json" results.SUPPORT_SAMPLES) southern samples into the blocks in $(json "$OUT/adapt.json" results.ADAPTATION_SECONDS) s (the whole job: $(json "$OUT/adapt.json" results.SECONDS) s; no meta-training); scored on the other $(json "$OUT/adapt.json" results.HOLDOUT_SAMPLES) southern points"
  echo "- held-out ROC-AUC: same model without adaptation $(json "$OUT/adapt_evaluate_susceptibility.json" results.ROC_AUC), adapted $(json "$OUT/adapt_evaluate_susceptibility_adapted.json" results.ROC_AUC), random forest on the north + the same samples $(json "$OUT/adapt_evaluate_susceptibility_rf_north_plus_k.json" results.ROC_AUC)"
  echo "- the adaptation's own scores on the same points: AUC $(json "$OUT/adapt.json" results.HOLDOUT_AUC_BEFORE) before, $(json "$OUT/adapt.json" results.HOLDOUT_AUC_AFTER) after; Brier $(json "$OUT/adapt.json" results.HOLDOUT_BRIER_BEFORE) -> $(json "$OUT/adapt.json" results.HOLDOUT_BRIER_AFTER)"
  echo "- outputs: adapted_model.safetensors, adapted_samples.csv (role support/holdout, p before/after), susceptibility_adapted.tif, susceptibility_rf_north_plus_k.tif, adapt_eval_*.html"
} >> "$SUMMARY"
