# Landslide mapping on the real Bijie pairs shipped in tests/data (sourced by scripts/demo.sh):
# train a small U-Net on 6 pairs, map a held-out image, evaluate it against its mask.
BIJIE="$DATA/bijie"
run slidewise:trainmapping DATASET_TYPE=0 "TRAIN_IMAGES=$BIJIE/train/images" \
  "TRAIN_MASKS=$BIJIE/train/masks" MASK_COLOR=255,255,0 EPOCHS=6 CHIP_SIZE=256 BATCH_SIZE=4 \
  "OUTPUT=$OUT/mapping_model.safetensors"
run slidewise:maplandslides "INPUT=$BIJIE/test/images/10105.png" \
  "MODEL=$OUT/mapping_model.safetensors" "OUTPUT_PROBABILITY=$OUT/landslide_probability.tif" \
  "OUTPUT_MASK=$OUT/landslide_mask.tif" "OUTPUT_POLYGONS=$OUT/landslide_polygons.gpkg"
# Scored at the threshold its landslide_mask.tif uses (chosen on the image: THRESHOLD_RULE
# expected_f1; in the map's manifest), not at 0.5: calibrated probabilities of a rare class
# are cut well below 0.5.
run slidewise:evaluatemapping "INPUT=$OUT/landslide_probability.tif" \
  "REFERENCE=$BIJIE/test/masks/10105.png" LANDSLIDE_VALUES=255 \
  "THRESHOLD=$(json "$OUT/landslide_probability.manifest.json" figures.threshold)" \
  "OUTPUT=$OUT/mapping_evaluation.json" "OUTPUT_HTML=$OUT/mapping_evaluation.html"
{
  echo
  echo "## Landslide mapping (Bijie, 6 training pairs, 1 held-out image)"
  echo "- validation F1 during training: $(json "$OUT/trainmapping.json" results.VALID_F1) (best epoch $(json "$OUT/trainmapping.json" results.BEST_EPOCH))"
  echo "- threshold stored in the model (tuned on the validation images): $(json "$OUT/trainmapping.json" results.VALID_THRESHOLD); used by the mask (best expected F1 on the image): $(json "$OUT/landslide_probability.manifest.json" figures.threshold)"
  echo "- held-out image 10105: F1 $(json "$OUT/evaluatemapping.json" results.F1), IoU $(json "$OUT/evaluatemapping.json" results.IOU), precision $(json "$OUT/evaluatemapping.json" results.PRECISION), recall $(json "$OUT/evaluatemapping.json" results.RECALL)"
  echo "- outputs: mapping_model.safetensors, landslide_probability.tif, landslide_mask.tif, landslide_polygons.gpkg, mapping_evaluation.html (+ manifests)"
} >> "$SUMMARY"
