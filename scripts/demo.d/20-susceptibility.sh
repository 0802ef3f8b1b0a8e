# Susceptibility pipeline on the real southern-Ecuador data (sourced by scripts/demo.sh).
# Honest split: the model learns from the northern half of the 350 sample points and is
# evaluated on the southern half of the 1,535-point inventory (no point is in both).
ECU="$DATA/ecuador"
SPLIT_Y=9558766
ogr2ogr -q -overwrite -f GPKG "$OUT/train_points.gpkg" "$ECU/lsl.csv" -nln train_points \
  -oo X_POSSIBLE_NAMES=x -oo Y_POSSIBLE_NAMES=y -oo AUTODETECT_TYPE=YES -a_srs EPSG:32717 \
  -where "y > $SPLIT_Y"
ogr2ogr -q -overwrite -f GPKG "$OUT/validation_points.gpkg" "$ECU/landslides.csv" \
  -nln validation_points -oo X_POSSIBLE_NAMES=x -oo Y_POSSIBLE_NAMES=y -oo AUTODETECT_TYPE=YES \
  -a_srs EPSG:32717 -where "y <= $SPLIT_Y"

run slidewise:segmentblocks "INPUT=$ECU/ta.tif" N_BLOCKS=24 \
  "INVENTORY=$OUT/train_points.gpkg" LABEL_FIELD=lslpts \
  "OUTPUT=$OUT/blocks.tif" "OUTPUT_POLYGONS=$OUT/blocks.gpkg"
run slidewise:trainsusceptibility "INPUT=$ECU/ta.tif" "INVENTORY=$OUT/train_points.gpkg" \
  LABEL_FIELD=lslpts "BLOCKS=$OUT/blocks.tif" METHOD=0 ITERATIONS_META=1000 CV_FOLDS=3 "OUTPUT=$OUT/susceptibility_model.safetensors"
run slidewise:predictsusceptibility "MODEL=$OUT/susceptibility_model.safetensors" \
  "INPUT=$ECU/ta.tif" "OUTPUT=$OUT/susceptibility.tif" "CLASSED=$OUT/susceptibility_classes.tif"
run slidewise:evaluatesusceptibility "INPUT=$OUT/susceptibility.tif" \
  "INVENTORY=$OUT/validation_points.gpkg" LABEL_FIELD=lslpts \
  "TRAINING=$OUT/train_points.gpkg" "OUTPUT=$OUT/susceptibility_report.html"

{
  echo
  echo "## Susceptibility (southern Ecuador: 5 factors at 10 m, meta-learning over 24 blocks)"
  echo "- trained on the $(ogrinfo -q -sql 'SELECT COUNT(*) FROM train_points' "$OUT/train_points.gpkg" | sed -n 's/.*(Integer) = //p') sample points north of y = $SPLIT_Y; evaluated on the $(ogrinfo -q -sql 'SELECT COUNT(*) FROM validation_points' "$OUT/validation_points.gpkg" | sed -n 's/.*(Integer) = //p') inventory points south of it"
  echo "- cross-validation during training: leave-blocks-out AUC $(json "$OUT/trainsusceptibility.json" results.CV_SPATIAL_AUC_MEAN) (K = 5 shots per held-out block) vs random $(json "$OUT/trainsusceptibility.json" results.CV_RANDOM_AUC_MEAN) (the optimism of random splits)"
  echo "- held-out south: ROC-AUC $(json "$OUT/evaluatesusceptibility.json" results.ROC_AUC), prediction-rate AUC $(json "$OUT/evaluatesusceptibility.json" results.PREDICTION_RATE_AUC), F1 $(json "$OUT/evaluatesusceptibility.json" results.F1), kappa $(json "$OUT/evaluatesusceptibility.json" results.KAPPA)"
  echo "- outputs: blocks.tif / blocks.gpkg, susceptibility_model.safetensors, susceptibility.tif, susceptibility_classes.tif, susceptibility_report.html (+ .json)"
} >> "$SUMMARY"
