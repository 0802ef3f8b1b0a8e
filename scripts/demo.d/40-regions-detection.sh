# Per-region decoders and object boxes on the Bijie pairs (sourced by scripts/demo.sh after the
# mapping step): a shared-encoder model (smp U-Net; the default mapping recipe's small U-Net
# cannot take region decoders) is trained on the training pairs as region "bijie"; a second
# decoder is trained, with the shared encoder frozen, on held-out pair 10138 as region
# "bijie_east" (a stand-in for a new area: the forgetting table must show no change for
# "bijie"); image 10105 is mapped with that decoder, and landslide boxes are drawn around the
# connected components of the mapping model's map.
BIJIE="$DATA/bijie"
mkdir -p "$OUT/region_data/images" "$OUT/region_data/masks"
cp "$BIJIE/test/images/10138.png" "$OUT/region_data/images/"
cp "$BIJIE/test/masks/10138.png" "$OUT/region_data/masks/"
run_as addregion_base slidewise:addregion REGION=bijie DATASET_TYPE=0 \
  "TRAIN_IMAGES=$BIJIE/train/images" "TRAIN_MASKS=$BIJIE/train/masks" MASK_COLOR=255,255,0 \
  EPOCHS=6 CHIP_SIZE=256 "OUTPUT=$OUT/regions_base.safetensors"
run slidewise:addregion "MODEL=$OUT/regions_base.safetensors" \
  REGION=bijie_east MODE=0 DATASET_TYPE=0 "TRAIN_IMAGES=$OUT/region_data/images" \
  "TRAIN_MASKS=$OUT/region_data/masks" MASK_COLOR=255,255,0 EPOCHS=4 CHIP_SIZE=256 \
  "OUTPUT=$OUT/regions_model.safetensors"
run slidewise:maplandslides "INPUT=$BIJIE/test/images/10105.png" \
  "MODEL=$OUT/regions_model.safetensors" REGION=bijie_east \
  "OUTPUT_PROBABILITY=$OUT/region_probability.tif"
run slidewise:detectlandslides "INPUT=$BIJIE/test/images/10105.png" \
  "MODEL=$OUT/mapping_model.safetensors" SOURCE=1 "OUTPUT=$OUT/landslide_boxes.gpkg"
{
  echo
  echo "## Region decoders and boxes (Bijie)"
  echo "- region bijie_east (frozen encoder, trained on pair 10138): validation F1 $(json "$OUT/addregion.json" results.VALID_F1)"
  echo "- forgetting: bijie F1 $(json "$OUT/addregion.json" results.BIJIE_F1_BEFORE) before, $(json "$OUT/addregion.json" results.BIJIE_F1_AFTER) after"
  echo "- image 10105 mapped with decoder bijie_east: $(json "$OUT/maplandslides.json" results.LANDSLIDE_PIXELS) landslide pixels"
  echo "- boxes from the bijie map's components: $(json "$OUT/detectlandslides.json" results.BOXES)"
  echo "- outputs: regions_model.safetensors, region_probability.tif, landslide_boxes.gpkg (+ manifests)"
} >> "$SUMMARY"
