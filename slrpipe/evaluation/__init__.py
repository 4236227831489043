"""What a trained model is measured and used with: metrics, the evaluate stage, the report,
prediction on new inputs and the skeleton viewer."""
